"""The review console: check what pictguard flagged without looking at it unblurred.

Served at ``/admin/review`` by the API (with the admin token set) and by ``pictguard
review`` on loopback. Pages are rendered on the server; images reach the browser only as
blurred greyscale thumbnails, unless a reviewer reveals one, which the audit records.
"""
