"""The terminal front end. ``main`` is its composition root (the command table, ``help`` and
``version``, and the exit codes of the failures it catches); ``common`` is what every command
shares; ``prompt``, ``manage``, ``installed``, ``fanout`` and ``chat`` hold the commands,
``run`` runs one prompt, ``live`` shows one run on a terminal (and the backend's diagnostics)
and ``progress`` is the live view of a fan-out. What the commands print is worded in
``clinvk_lib.render``."""
