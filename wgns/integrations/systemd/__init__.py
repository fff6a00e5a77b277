"""systemd: wgns@.service, `wgns confine` drop-ins, the generator for profiles' `units`, sd_notify."""
