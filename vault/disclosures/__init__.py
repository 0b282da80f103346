"""The legal-disclosure register (issue #15): requests from authorities, objection, four-eyes
approval of the exact recipient key, the export to that key with a signed manifest, and the
customer's notification (or its legal bar).

Modules: ``states`` (the one owner of ``Disclosure.status``), ``register`` (registering,
changing, objecting, closing, reading), ``approvals`` (approval and emergency after-review),
``disclose`` (exports and the manifest), ``notification`` (notifying, barring, the review job,
and what subject access and the evidence report show), ``routes``.
"""
