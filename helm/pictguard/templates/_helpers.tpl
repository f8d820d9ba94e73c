{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names and labels.
*/}}
{{- define "pictguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name when it already holds it.
*/}}
{{- define "pictguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pictguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of one component's objects. Call with (dict "root" $ "component" "classify").
*/}}
{{- define "pictguard.componentName" -}}
{{- printf "%s-%s" (include "pictguard.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pictguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pictguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pictguard.labels" -}}
helm.sh/chart: {{ include "pictguard.chart" . }}
{{ include "pictguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pictguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of one component. Call with (dict "root" $ "component" "classify").
*/}}
{{- define "pictguard.componentSelectorLabels" -}}
{{ include "pictguard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pictguard.componentLabels" -}}
{{ include "pictguard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pictguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pictguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pictguard.configMapName" -}}
{{- include "pictguard.fullname" . }}
{{- end }}

{{/*
"true" when the roles run as separate Deployments over Kafka (mode: distributed), else "".
*/}}
{{- define "pictguard.distributed" -}}
{{- if ne (.Values.mode | default "distributed") "single" }}true{{ end -}}
{{- end }}

{{/*
Which set of secrets a component's pods get. Call with the component name.
*/}}
{{- define "pictguard.secretRole" -}}
{{- $roles := dict "validate-api" "api" "ingest" "ingest" "classify" "classify" "enforce" "enforce" "topics" "topics" "backfill" "jobs" "reconcile" "jobs" "server" "server" -}}
{{- required (printf "no secret role for component %s" .) (get $roles .) -}}
{{- end }}

{{/*
The secret roles this release runs, as a list (fromJsonArray).
*/}}
{{- define "pictguard.secretRoles" -}}
{{- $v := .Values -}}
{{- $roles := list -}}
{{- if include "pictguard.distributed" . -}}
{{- if $v.validateApi.enabled }}{{ $roles = append $roles "api" }}{{ end -}}
{{- if $v.ingest.enabled }}{{ $roles = append $roles "ingest" }}{{ end -}}
{{- if $v.classify.enabled }}{{ $roles = append $roles "classify" }}{{ end -}}
{{- if $v.enforce.enabled }}{{ $roles = append $roles "enforce" }}{{ end -}}
{{- if $v.topics.enabled }}{{ $roles = append $roles "topics" }}{{ end -}}
{{- if or $v.backfill.enabled $v.reconcile.enabled }}{{ $roles = append $roles "jobs" }}{{ end -}}
{{- else -}}
{{- $roles = list "server" -}}
{{- end -}}
{{- toJson $roles -}}
{{- end }}

{{/*
The existing Secret (managed by the admin) a secret role uses, or "".
Call with (dict "root" $ "role" "classify").
*/}}
{{- define "pictguard.existingSecretOf" -}}
{{- $s := .root.Values.secrets -}}
{{- $key := .role -}}
{{- if eq $key "topics" }}{{ $key = "jobs" }}{{ end -}}
{{- get ($s.existingSecrets | default dict) $key | default $s.existingSecret | default "" -}}
{{- end }}

{{/*
Name of the Secret whose keys become environment variables in a secret role's pods.
Call with (dict "root" $ "role" "classify").
*/}}
{{- define "pictguard.roleSecretName" -}}
{{- $existing := include "pictguard.existingSecretOf" . -}}
{{- if $existing -}}
{{- $existing -}}
{{- else if eq .role "api" -}}
{{- include "pictguard.componentName" (dict "root" .root "component" "validate-api") -}}
{{- else if eq .role "topics" -}}
{{- include "pictguard.componentName" (dict "root" .root "component" "topics") }}-hook
{{- else -}}
{{- include "pictguard.componentName" (dict "root" .root "component" .role) -}}
{{- end -}}
{{- end }}

{{/*
Image reference. Call with (dict "root" $ "override" .Values.classify.image); the override
may set repository, tag, digest and flavour (cuda appends "-cuda" to the default tag).
*/}}
{{- define "pictguard.image" -}}
{{- $img := .root.Values.image -}}
{{- $o := .override | default dict -}}
{{- $repo := $o.repository | default $img.repository -}}
{{- $digest := $img.digest -}}
{{- if .override }}{{ $digest = $o.digest }}{{ end -}}
{{- if $digest -}}
{{- printf "%s@%s" $repo $digest -}}
{{- else -}}
{{- $suffix := ternary "-cuda" "" (eq ($o.flavour | default "cpu") "cuda") -}}
{{- $tag := $o.tag | default (printf "%s%s" ($img.tag | default .root.Chart.AppVersion) $suffix) -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end }}

{{/*
The classifiers pictguard will load: config.classify.classifiers, or the settings' default
(tests/helm checks that this default matches classify.settings.ClassifySettings).
*/}}
{{- define "pictguard.classifiers" -}}
{{- $c := (.Values.config.classify | default dict).classifiers | default (list "hashlist" "nudenet" "clip") -}}
{{- toJson $c -}}
{{- end }}

{{/*
"true" when the CLIP weights must be fetched before the pod starts: clip is configured, the
image has open_clip (flavour cuda) and the download is on. Call with
(dict "root" $ "image" <image override with flavour> "cache" <modelCache values>).
*/}}
{{- define "pictguard.needsModelDownload" -}}
{{- $clip := has "clip" (include "pictguard.classifiers" .root | fromJsonArray) -}}
{{- if and .cache.download $clip (eq (.image.flavour | default "cpu") "cuda") }}true{{ end -}}
{{- end }}

{{/*
"true" when clip is configured but the image cannot run it (flavour cpu).
*/}}
{{- define "pictguard.clipWithoutOpenClip" -}}
{{- $clip := has "clip" (include "pictguard.classifiers" .root | fromJsonArray) -}}
{{- if and $clip (ne (.image.flavour | default "cpu") "cuda") }}true{{ end -}}
{{- end }}

{{/*
The model-cache volume of a classifying pod. Call with (dict "root" $ "claim" <default PVC
name> "cache" <modelCache values>).
*/}}
{{- define "pictguard.modelCacheVolume" -}}
{{- $cache := .cache -}}
{{- $volume := dict "name" "model-cache" -}}
{{- if $cache.persistence.enabled -}}
{{- $_ := set $volume "persistentVolumeClaim" (dict "claimName" ($cache.persistence.existingClaim | default .claim)) -}}
{{- else -}}
{{- $emptyDir := dict -}}
{{- with $cache.sizeLimit }}{{ $_ := set $emptyDir "sizeLimit" . }}{{ end -}}
{{- $_ := set $volume "emptyDir" $emptyDir -}}
{{- end -}}
{{- toJson $volume -}}
{{- end }}

{{/*
A PersistentVolumeClaim. Call with (dict "root" $ "component" c "name" n "persistence" p
"keep" <true: survive uninstall>).
*/}}
{{- define "pictguard.pvc" -}}
{{- $p := .persistence -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pictguard.componentLabels" . | nindent 4 }}
  {{- if .keep }}
  annotations:
    # The audit trail and the guard's state outlive an uninstall.
    helm.sh/resource-policy: keep
  {{- end }}
spec:
  accessModes:
    {{- toYaml $p.accessModes | nindent 4 }}
  {{- with $p.storageClass }}
  storageClassName: {{ if eq . "-" }}""{{ else }}{{ . }}{{ end }}
  {{- end }}
  resources:
    requests:
      storage: {{ $p.size }}
{{- end }}

{{/*
Kafka topic and consumer-group names, as pictguard derives them from config.kafka.
*/}}
{{- define "pictguard.topicPrefix" -}}
{{- $k := .Values.config.kafka | default dict -}}
{{- if hasKey $k "topic_prefix" }}{{ $k.topic_prefix }}{{ else }}pictguard.{{ end -}}
{{- end }}

{{- define "pictguard.groupPrefix" -}}
{{- $k := .Values.config.kafka | default dict -}}
{{- if hasKey $k "group_prefix" }}{{ $k.group_prefix }}{{ else }}pictguard-{{ end -}}
{{- end }}

{{- define "pictguard.kafkaSecurityProtocol" -}}
{{- (.Values.config.kafka | default dict).security_protocol | default "PLAINTEXT" -}}
{{- end }}

{{- define "pictguard.kafkaTlsMountPath" -}}
/etc/pictguard-kafka-tls
{{- end }}

{{/*
config.yaml: the values' `config` plus what the chart decides (ports, state dir, storage
backend, TLS files). Single mode has no Kafka section at all.
*/}}
{{- define "pictguard.configYaml" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $distributed := include "pictguard.distributed" . -}}
{{- $forced := dict
  "api" (dict "port" (int .Values.ports.api))
  "ingest" (dict "webhook" (dict "enabled" true "port" (int .Values.ports.webhook)))
  "metrics" (dict "port" (int .Values.ports.metrics))
  "storage" (dict "state_dir" "/var/lib/pictguard" "backend" (ternary "kafka" "sqlite" (eq $distributed "true")))
-}}
{{- if not $distributed -}}
{{- $_ := unset $cfg "kafka" -}}
{{- end -}}
{{- $tls := dict -}}
{{- if .Values.kafkaTls.caSecret -}}
{{- $_ := set $tls "ssl_cafile" (printf "%s/ca.crt" (include "pictguard.kafkaTlsMountPath" .)) -}}
{{- end -}}
{{- if .Values.kafkaTls.clientSecret -}}
{{- $_ := set $tls "ssl_certfile" (printf "%s/client.crt" (include "pictguard.kafkaTlsMountPath" .)) -}}
{{- $_ := set $tls "ssl_keyfile" (printf "%s/client.key" (include "pictguard.kafkaTlsMountPath" .)) -}}
{{- end -}}
{{- if and $tls $distributed }}{{ $_ := set $forced "kafka" $tls }}{{ end -}}
{{- $cfg = mergeOverwrite $cfg $forced -}}
{{ toYaml $cfg }}
{{- end }}

{{/*
What one secret role may see, as YAML (environment variable name -> value), or "" when
nothing. Call with (dict "root" $ "role" "classify"). Roles: api (validate-api), ingest,
classify, enforce, topics (the hook), jobs (backfill, reconcile), server (mode single).
validate-api and classify parse untrusted images: no S3 write keys, no notification,
webhook or admin secrets reach them. docs/deployment.md lists the same table.
*/}}
{{- define "pictguard.roleSecretEnv" -}}
{{- $s := .root.Values.secrets -}}
{{- $role := .role -}}
{{- $env := dict -}}
{{- $kafkaRoles := list "api" "ingest" "classify" "enforce" "topics" "jobs" -}}
{{- if has $role $kafkaRoles -}}
{{- with ($s.kafka | default dict).saslUsername }}{{ $_ := set $env "PICTGUARD_KAFKA__SASL_USERNAME" . }}{{ end -}}
{{- with ($s.kafka | default dict).saslPassword }}{{ $_ := set $env "PICTGUARD_KAFKA__SASL_PASSWORD" . }}{{ end -}}
{{- end -}}
{{- $s3 := dict -}}
{{- if has $role (list "ingest" "classify" "jobs") }}{{ $s3 = $s.s3ReadOnly | default dict }}{{ end -}}
{{- if has $role (list "enforce" "server") }}{{ $s3 = $s.s3ReadWrite | default dict }}{{ end -}}
{{- with $s3.accessKeyId }}{{ $_ := set $env "PICTGUARD_S3__ACCESS_KEY_ID" . }}{{ end -}}
{{- with $s3.secretAccessKey }}{{ $_ := set $env "PICTGUARD_S3__SECRET_ACCESS_KEY" . }}{{ end -}}
{{- with $s3.sessionToken }}{{ $_ := set $env "PICTGUARD_S3__SESSION_TOKEN" . }}{{ end -}}
{{- if has $role (list "api" "server") -}}
{{- with ($s.api | default dict).clients }}{{ $_ := set $env "PICTGUARD_API__CLIENTS" (toJson .) }}{{ end -}}
{{- end -}}
{{- if eq $role "server" -}}
{{- with $s.adminToken }}{{ $_ := set $env "PICTGUARD_ENFORCE__ADMIN_TOKEN" . }}{{ end -}}
{{- end -}}
{{- if has $role (list "ingest" "server") -}}
{{- $w := $s.webhooks | default dict -}}
{{- with $w.minioToken }}{{ $_ := set $env "PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN" . }}{{ end -}}
{{- with $w.cephToken }}{{ $_ := set $env "PICTGUARD_INGEST__WEBHOOK__CEPH_TOKEN" . }}{{ end -}}
{{- with $w.b2Secret }}{{ $_ := set $env "PICTGUARD_INGEST__WEBHOOK__B2_SECRET" . }}{{ end -}}
{{- end -}}
{{- if has $role (list "enforce" "server") -}}
{{- with $s.notifyChannels }}{{ $_ := set $env "PICTGUARD_ENFORCE__NOTIFY__CHANNELS" (toJson .) }}{{ end -}}
{{- /* The review console: the server's API, or `pictguard review` in the enforce pod. */ -}}
{{- with $s.reviewers }}{{ $_ := set $env "PICTGUARD_ENFORCE__REVIEW__REVIEWERS" (toJson .) }}{{ end -}}
{{- end -}}
{{- /* secrets.env: a PICTGUARD_<SECTION>__ key goes to the roles of that section. */ -}}
{{- $sections := dict
  "KAFKA" $kafkaRoles
  "API" (list "api" "server")
  "CLASSIFY" (list "classify" "server")
  "ENFORCE" (list "enforce" "server")
  "INGEST" (list "ingest" "server")
-}}
{{- range $key, $value := ($s.env | default dict) -}}
{{- $section := "" -}}
{{- if hasPrefix "PICTGUARD_" $key -}}
{{- $section = trimPrefix "PICTGUARD_" $key | splitList "__" | first -}}
{{- end -}}
{{- if not (hasKey $sections $section) }}{{ $_ := set $env $key $value }}
{{- else if has $role (get $sections $section) }}{{ $_ := set $env $key $value }}
{{- end -}}
{{- end -}}
{{- if $env }}{{ toYaml $env }}{{ end -}}
{{- end }}

{{/*
Data of a chart-managed Secret: environment variable name -> base64 value.
Call with (dict "root" $ "role" "classify").
*/}}
{{- define "pictguard.roleSecretData" -}}
{{- $env := include "pictguard.roleSecretEnv" . | fromYaml -}}
{{- range $k := keys $env | sortAlpha }}
{{ $k }}: {{ get $env $k | toString | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
Non-empty when any secret value is set under secrets.* (not counting existingSecret(s)).
*/}}
{{- define "pictguard.anySecretValue" -}}
{{- $s := .Values.secrets -}}
{{- range $name := list "s3ReadOnly" "s3ReadWrite" "kafka" "webhooks" -}}
{{- range $k, $v := (get $s $name | default dict) }}{{ if $v }}{{ $name }}.{{ $k }} {{ end }}{{ end -}}
{{- end -}}
{{- if ($s.api | default dict).clients }}api.clients {{ end -}}
{{- if $s.adminToken }}adminToken {{ end -}}
{{- if $s.notifyChannels }}notifyChannels {{ end -}}
{{- if $s.reviewers }}reviewers {{ end -}}
{{- if $s.env }}env {{ end -}}
{{- end }}

{{/*
Checks that stop `helm install` / `helm template` with a message the admin can act on.
*/}}
{{- define "pictguard.validate" -}}
{{- $v := .Values -}}
{{- $s := $v.secrets -}}
{{- $distributed := include "pictguard.distributed" . -}}
{{- if $distributed -}}
{{- $needsKafka := or $v.validateApi.enabled $v.ingest.enabled $v.classify.enabled $v.enforce.enabled $v.topics.enabled $v.backfill.enabled $v.reconcile.enabled -}}
{{- if and $needsKafka (not ($v.config.kafka | default dict).bootstrap_servers) -}}
{{- fail "config.kafka.bootstrap_servers is empty: set it to your Kafka brokers, e.g. --set config.kafka.bootstrap_servers=my-cluster-kafka-bootstrap.kafka:9092 (or run without Kafka: --set mode=single)" -}}
{{- end -}}
{{- if $s.adminToken -}}
{{- fail "secrets.adminToken is set, but with mode distributed the admin endpoints would sit in validate-api, which parses untrusted uploads and gets no admin secret: leave it empty and run the admin commands in the enforce pod (kubectl exec deploy/<release>-pictguard-enforce -- pictguard allow|restore|enforce resume ...)" -}}
{{- end -}}
{{- else -}}
{{- if $v.backfill.enabled -}}
{{- fail "backfill.enabled needs Kafka (mode distributed). With mode single, scan a bucket with config.ingest.reconcile (enabled: true, locations: [s3://bucket]) or kubectl exec into the pod: pictguard scan s3://bucket --dry-run" -}}
{{- end -}}
{{- if $v.reconcile.enabled -}}
{{- fail "reconcile.enabled (the CronJob) needs Kafka (mode distributed). With mode single, set config.ingest.reconcile.enabled=true and its locations: the server reconciles by itself" -}}
{{- end -}}
{{- end -}}
{{- if and $v.backfill.enabled (not $v.backfill.targets) -}}
{{- fail "backfill.enabled is true but backfill.targets is empty: list the buckets, e.g. s3://pictrs" -}}
{{- end -}}
{{- if and $v.reconcile.enabled (not $v.reconcile.targets) -}}
{{- fail "reconcile.enabled is true but reconcile.targets is empty: list the buckets, e.g. s3://pictrs" -}}
{{- end -}}
{{- /* Secrets: one set per role. */ -}}
{{- if $s.s3 -}}
{{- fail "secrets.s3 was split by permission: put read-only keys (list, get) under secrets.s3ReadOnly (classify, ingest, backfill, reconcile) and read-write keys under secrets.s3ReadWrite (enforce, mode single); docs/deployment.md has the IAM policy of each" -}}
{{- end -}}
{{- range $key, $_ := ($s.env | default dict) -}}
{{- if or (hasPrefix "PICTGUARD_S3__" $key) (has $key (list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN")) -}}
{{- fail (printf "secrets.env.%s: S3 credentials go under secrets.s3ReadOnly / secrets.s3ReadWrite, so that only enforce holds the keys that may delete" $key) -}}
{{- end -}}
{{- end -}}
{{- $values := include "pictguard.anySecretValue" . | trim -}}
{{- if and $s.existingSecret $values -}}
{{- fail (printf "secrets.existingSecret is set together with secret values under secrets.* (%s): put those keys into the existing Secret instead" $values) -}}
{{- end -}}
{{- range $role := include "pictguard.secretRoles" . | fromJsonArray -}}
{{- $own := get ($s.existingSecrets | default dict) (ternary "jobs" $role (eq $role "topics")) -}}
{{- $env := include "pictguard.roleSecretEnv" (dict "root" $ "role" $role) | fromYaml -}}
{{- if and $own $env -}}
{{- fail (printf "secrets.existingSecrets.%s is set, but these values under secrets.* would go to that role too: %s. Put them into Secret %q instead" (ternary "jobs" $role (eq $role "topics")) (keys $env | sortAlpha | join ", ") $own) -}}
{{- end -}}
{{- end -}}
{{- /* The scan API must not be open to the internet through an ingress (or a load balancer). */ -}}
{{- $api := ternary $v.validateApi $v.single (eq $distributed "true") -}}
{{- $apiOn := or (not $distributed) $v.validateApi.enabled -}}
{{- $where := ternary "validateApi" "single" (eq $distributed "true") -}}
{{- $clients := ($s.api | default dict).clients | default list -}}
{{- $untokened := list -}}
{{- range $clients }}{{ if not .token }}{{ $untokened = append $untokened .id }}{{ end }}{{ end -}}
{{- if and $apiOn $api.ingress.enabled -}}
{{- if not ($v.config.api | default dict).trusted_proxies -}}
{{- fail (printf "%s.ingress.enabled exposes the scan API, but config.api.trusted_proxies is empty: every request would come from the ingress controller's pod address, so a client's cidrs (e.g. 10.0.0.0/8) would admit the whole internet. Set config.api.trusted_proxies to the ingress controller's pod network (e.g. [\"10.42.0.0/16\"]) so that X-Forwarded-For names the real caller" $where) -}}
{{- end -}}
{{- end -}}
{{- $exposed := or (and $apiOn $api.ingress.enabled) (and $apiOn (has $api.service.type (list "LoadBalancer" "NodePort"))) -}}
{{- if and $exposed $untokened -}}
{{- fail (printf "the scan API is reachable from outside the cluster (%s.ingress or a %s Service), but these API clients have no token: %s. Give each one under secrets.api.clients (pict-rs sends it as ?token=<token> in its external_validation URL)" $where $api.service.type (join ", " $untokened)) -}}
{{- end -}}
{{- if $distributed -}}
{{- $as := $v.validateApi.autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail "validateApi.autoscaling.minReplicas is greater than maxReplicas" -}}
{{- end -}}
{{- $keda := $v.classify.keda -}}
{{- if and $keda.enabled (gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount)) -}}
{{- fail "classify.keda.minReplicaCount is greater than maxReplicaCount" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
One pictguard container. Call with a dict:
  root       the chart context ($)
  component  role name, e.g. "classify" (also OTEL_SERVICE_NAME pictguard-<component>)
  name       container name (default: component)
  args       pictguard arguments after --config, e.g. (list "run" "classify")
  image      image override dict (optional)
  ports      list of (dict "name" "http" "port" 8080) (optional)
  role       the role's values: probes, resources, lifecycle, extraArgs, extraEnv (optional)
  resources  resources (optional, wins over role.resources)
  probes     true to render the role's probes
  cacheHome  writable cache folder, XDG_CACHE_HOME and HF_HOME=<cacheHome>/huggingface
             (default /tmp/.cache)
  env        extra env entries (optional)
  mounts     extra volumeMounts (optional)
  secretName Secret of the environment (default: the component's secret role, see
             pictguard.roleSecretName)
*/}}
{{- define "pictguard.container" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $role := .role | default dict -}}
- name: {{ .name | default .component }}
  image: {{ include "pictguard.image" (dict "root" $root "override" .image) | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - --config
    - /etc/pictguard/config.yaml
    {{- range .args }}
    - {{ . | quote }}
    {{- end }}
    {{- range $role.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - name: {{ .name }}
      containerPort: {{ .port }}
      protocol: TCP
    {{- end }}
  {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: OTEL_SERVICE_NAME
      value: pictguard-{{ .component }}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: service.namespace=$(POD_NAMESPACE),service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)
    # Caches must live on a writable volume: the root filesystem is read-only.
    - name: XDG_CACHE_HOME
      value: {{ .cacheHome | default "/tmp/.cache" }}
    - name: HF_HOME
      value: {{ .cacheHome | default "/tmp/.cache" }}/huggingface
    {{- with $v.otel.endpoint }}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ . | quote }}
    {{- end }}
    {{- with $v.otel.protocol }}
    - name: OTEL_EXPORTER_OTLP_PROTOCOL
      value: {{ . | quote }}
    {{- end }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $role.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  envFrom:
    - secretRef:
        name: {{ .secretName | default (include "pictguard.roleSecretName" (dict "root" $root "role" (include "pictguard.secretRole" .component))) }}
    {{- with $v.extraEnvFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumeMounts:
    - name: config
      mountPath: /etc/pictguard
      readOnly: true
    - name: tmp
      mountPath: /tmp
    - name: state
      mountPath: /var/lib/pictguard
    {{- if and (include "pictguard.distributed" $root) (or $v.kafkaTls.caSecret $v.kafkaTls.clientSecret) }}
    - name: kafka-tls
      mountPath: {{ include "pictguard.kafkaTlsMountPath" $root }}
      readOnly: true
    {{- end }}
    {{- with .mounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (.resources | default $role.resources) }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .probes }}
  {{- with $role.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
{{- end }}

{{/*
Pod-level volumes shared by every pictguard pod. Call with a dict:
  root, stateClaim (PVC for the state dir, optional), volumes (extra, optional),
  configName override for hook copies (optional).
*/}}
{{- define "pictguard.volumes" -}}
{{- $v := .root.Values -}}
- name: config
  configMap:
    name: {{ .configName | default (include "pictguard.configMapName" .root) }}
- name: tmp
  emptyDir:
    {{- with $v.tmpDir.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with $v.tmpDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
- name: state
  {{- if .stateClaim }}
  persistentVolumeClaim:
    claimName: {{ .stateClaim }}
  {{- else }}
  emptyDir:
    {{- with $v.stateDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
  {{- end }}
{{- if and (include "pictguard.distributed" .root) (or $v.kafkaTls.caSecret $v.kafkaTls.clientSecret) }}
- name: kafka-tls
  projected:
    defaultMode: 0440
    sources:
      {{- with $v.kafkaTls.caSecret }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $v.kafkaTls.caKey }}
              path: ca.crt
      {{- end }}
      {{- with $v.kafkaTls.clientSecret }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $v.kafkaTls.clientCertKey }}
              path: client.crt
            - key: {{ $v.kafkaTls.clientKeyKey }}
              path: client.key
      {{- end }}
{{- end }}
{{- with .volumes }}
{{ toYaml . }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod spec fields shared by every pictguard pod (everything but containers and volumes).
Call with (dict "root" $ "scheduling" <values with nodeSelector, tolerations, affinity,
topologySpreadConstraints, priorityClassName, runtimeClassName,
terminationGracePeriodSeconds, serviceAccountName> "serviceAccountName" <override that
wins even when empty, optional>
"spreadLabels" <selector labels for the node spread constraint, optional>).
*/}}
{{- define "pictguard.podSpecCommon" -}}
{{- $v := .root.Values -}}
{{- $s := .scheduling | default dict -}}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if hasKey . "serviceAccountName" }}
{{- with .serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- else }}
serviceAccountName: {{ $s.serviceAccountName | default (include "pictguard.serviceAccountName" .root) }}
{{- end }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
# pictguard reads PICTGUARD_* variables: keep Kubernetes' service-link variables out.
enableServiceLinks: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $s.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $s.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $s.terminationGracePeriodSeconds }}
terminationGracePeriodSeconds: {{ . }}
{{- end }}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or $s.topologySpreadConstraints (and $s.spreadAcrossNodes .spreadLabels) }}
topologySpreadConstraints:
  {{- with $s.topologySpreadConstraints }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- if and $s.spreadAcrossNodes .spreadLabels }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- .spreadLabels | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Pod template metadata of a long-running role: labels and the checksums that roll the pods
when config.yaml or the chart-managed Secret change. Call with (dict "root" $ "component" c
"role" <role values>).
*/}}
{{- define "pictguard.podMetadata" -}}
{{- $v := .root.Values -}}
labels:
  {{- include "pictguard.componentLabels" . | nindent 2 }}
  {{- with $v.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .role.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ print (include "pictguard.configYaml" .root) (toYaml $v.configFiles) | sha256sum }}
  {{- $secretCtx := dict "root" .root "role" (include "pictguard.secretRole" .component) }}
  {{- if not (include "pictguard.existingSecretOf" $secretCtx) }}
  checksum/secret: {{ include "pictguard.roleSecretData" $secretCtx | sha256sum }}
  {{- end }}
  {{- with $v.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .role.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Ingress to one component's Service. Call with (dict "root" $ "component" c
"ingress" <ingress values> "servicePort" <port number>).
*/}}
{{- define "pictguard.ingress" -}}
{{- $svc := include "pictguard.componentName" . -}}
{{- $port := .servicePort -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $svc }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pictguard.componentLabels" . | nindent 4 }}
  {{- with .ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with .ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- with .ingress.tls }}
  tls:
    {{- range . }}
    - hosts:
        {{- range .hosts }}
        - {{ . | quote }}
        {{- end }}
      {{- with .secretName }}
      secretName: {{ . }}
      {{- end }}
    {{- end }}
  {{- end }}
  rules:
    {{- range .ingress.hosts }}
    - host: {{ .host | quote }}
      http:
        paths:
          {{- range .paths }}
          - path: {{ .path }}
            pathType: {{ .pathType | default "Prefix" }}
            backend:
              service:
                name: {{ $svc }}
                port:
                  number: {{ $port }}
          {{- end }}
    {{- end }}
{{- end }}

{{/*
Non-empty when KEDA needs credentials to read consumer lag: SASL, or TLS material.
*/}}
{{- define "pictguard.kedaNeedsAuth" -}}
{{- if or (hasPrefix "SASL_" (include "pictguard.kafkaSecurityProtocol" .)) .Values.kafkaTls.caSecret .Values.kafkaTls.clientSecret -}}
true
{{- end -}}
{{- end }}

{{/*
Pod template of a one-shot pictguard command. Call with a dict:
  root, component, role (job values: resources, scheduling, extraArgs)
  commands    list of argument lists, run one after the other (the last one is the main
              container, the ones before it are init containers so they run in order)
  configName / secretName / serviceAccountName   overrides for hook jobs (optional)
  stateClaim  PVC for the state dir (optional)
*/}}
{{- define "pictguard.jobPodTemplate" -}}
{{- $top := . -}}
{{- $n := len .commands -}}
metadata:
  labels:
    {{- include "pictguard.componentLabels" . | nindent 4 }}
    {{- with .root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .root.Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  {{- $common := dict "root" .root "scheduling" .role }}
  {{- if hasKey . "serviceAccountName" }}{{ $_ := set $common "serviceAccountName" .serviceAccountName }}{{ end }}
  {{- include "pictguard.podSpecCommon" $common | trim | nindent 2 }}
  {{- if gt $n 1 }}
  initContainers:
    {{- range $i, $args := .commands }}
    {{- if lt (add1 $i) $n }}
    {{- include "pictguard.container" (dict "root" $top.root "component" $top.component "name" (printf "%s-%d" $top.component $i) "role" $top.role "args" $args "secretName" $top.secretName) | nindent 4 }}
    {{- end }}
    {{- end }}
  {{- end }}
  containers:
    {{- include "pictguard.container" (dict "root" .root "component" .component "role" .role "args" (last .commands) "secretName" .secretName) | nindent 4 }}
  volumes:
    {{- include "pictguard.volumes" (dict "root" .root "configName" .configName "stateClaim" .stateClaim) | nindent 4 }}
{{- end }}

{{/*
Job spec fields of backfill and reconcile. Call with the job's values.
*/}}
{{- define "pictguard.jobSpecFields" -}}
backoffLimit: {{ .backoffLimit }}
{{- with .activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . }}
{{- end }}
{{- if not (kindIs "invalid" .ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ .ttlSecondsAfterFinished }}
{{- end }}
{{- end }}

{{/*
CronJob spec fields of backfill and reconcile. Call with the job's values.
*/}}
{{- define "pictguard.cronJobSpecFields" -}}
schedule: {{ .schedule | quote }}
{{- with .timeZone }}
timeZone: {{ . | quote }}
{{- end }}
suspend: {{ .suspend }}
concurrencyPolicy: {{ .concurrencyPolicy }}
{{- with .startingDeadlineSeconds }}
startingDeadlineSeconds: {{ . }}
{{- end }}
successfulJobsHistoryLimit: {{ .successfulJobsHistoryLimit }}
failedJobsHistoryLimit: {{ .failedJobsHistoryLimit }}
{{- end }}
