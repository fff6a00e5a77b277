"""systemd: wgns@.service, `wgns confine` drop-ins, the units generator, sd_notify."""
