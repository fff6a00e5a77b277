# Mullvad from its own wg-quick .conf (kept outside the store), one service confined to it, its
# resolv.conf from the .conf's DNS, and port 9000 of the host forwarded into the namespace for
# localhost and the tailnet (the setup with netns@mullvad, wg-mullvad, NetworkNamespacePath=,
# environment.etc."netns/mullvad/resolv.conf" and a veth with DNAT).
{
  services.wgns.enable = true;
  services.wgns.namespaces.mullvad = {
    interfaces.se.config = "/var/lib/wgns/mullvad-se.conf";
    forwards = [
      {
        hostPort = 9000;
        from = [
          "127.0.0.0/8"
          "::1/128"
          "100.64.0.0/10"
          "fd7a:115c:a1e0::/48"
        ];
      }
    ];
  };
  systemd.services.qbittorrent.wgns.namespace = "mullvad";

  systemd.services.qbittorrent = {
    description = "qBittorrent (web UI on port 9000)";
    wantedBy = [ "multi-user.target" ];
    serviceConfig.ExecStart = "/bin/sleep infinity";
  };
}
