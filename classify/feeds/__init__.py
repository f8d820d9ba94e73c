"""Signed hash-list feeds between pictguard instances.

An instance *publishes* its own allow/block entries (hashes, list, category, a reason code,
time — never an image, never the free-text reason) as an append-only JSON-lines file with
a detached ed25519 signature, to a folder or an ``s3://`` prefix that any static host or
bucket serves. Other instances *subscribe* to it by URL and public key, pull it on an
interval, check the signature and that it only grew since what they applied, and write
its entries into their own hash lists with the feed as their source — directly
(``trust: block``) or as pending entries an admin accepts (``trust: review``). Removals
travel too.

Why in ``classify``: a feed is a source of hash-list entries, and classify is the role
that owns hash lists — their formats, the ``pictguard hashes`` commands and the matcher
whose verdicts name the feed that matched. The subscriber's only effect is writing
entries through the shared store (:mod:`pipeline.hashlists`); enforce acts on the
verdicts as on any other hash-list match and needs to know nothing about feeds. The loop
runs in ``pictguard serve`` and, distributed, as its own one-replica role (``pictguard
run feeds``), so classify replicas do not each pull the same feeds.

- :mod:`classify.feeds.keys`: ed25519 keys and signatures (``cryptography``).
- :mod:`classify.feeds.feed`: the file format and publishing.
- :mod:`classify.feeds.subscriber`: subscriptions, pulling, verifying, applying.
- :mod:`classify.feeds.role`: the loop; :mod:`classify.feeds.cli`: ``pictguard feeds``.
"""
