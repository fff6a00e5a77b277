"""How wgns fits into the rest of the system: systemd (units, confinement, the watchdog)."""
