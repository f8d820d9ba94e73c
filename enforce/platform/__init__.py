"""After a flag, on the platform that serves the image: pict-rs, Lemmy, Mastodon.

pictguard's storage action (quarantine, delete) leaves the platform's records behind:
pict-rs keeps the aliases, variants and rows of a moved file, Lemmy keeps serving posts
and avatars that point at it, and nobody learns who uploaded it. :class:`PlatformFlow`
(``enforce.platform.flow``) follows each action with what the admin configured in
``enforce.platform`` (``enforce.platform.settings``) and undoes it on restore where the
platform allows.
"""
