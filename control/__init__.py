"""The control plane's loop and its I/O: read -> decide -> write, once per tick.

``control.decide`` and ``control.record`` are pure (they import only ``router_lib``); every
other module is an adapter for one port of ``control.ports`` or the wiring that chooses them
(``control.server``).  This package sits above ``router_lib``, ``xds_server`` and ``fleet``, and
below the local platform that starts the processes (``local_platform``); see docs/architecture.md.
"""
