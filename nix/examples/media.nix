# A namespace written out as Nix options, and two services of the configuration confined to it
# (the setup that used a netns@ template, my.wireguard options and JoinsNamespaceOf= per service).
{
  services.wgns.enable = true;
  services.wgns.namespaces.media = {
    interfaces.wg0 = {
      privateKeyFile = "/var/lib/wgns/media.key";
      address = [
        "10.100.0.2/32"
        "fd00:100::2/128"
      ];
      mtu = 1380;
      peers = [
        {
          publicKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
          allowedIPs = [
            "0.0.0.0/0"
            "::/0"
          ];
          endpoint = "vpn.example.net:51820";
          persistentKeepalive = 25;
        }
      ];
    };
    dns = [ "10.100.0.1" ];
    confine = [ "transmission" ];
  };
  systemd.services.sonarr.wgns.namespace = "media";

  # stand-ins for services the configuration already has, from their own modules
  systemd.services.transmission = {
    description = "Transmission BitTorrent daemon";
    wantedBy = [ "multi-user.target" ];
    serviceConfig.ExecStart = "/bin/sleep infinity";
  };
  systemd.services.sonarr = {
    description = "Sonarr";
    after = [ "network.target" ];
    serviceConfig.ExecStart = "/bin/sleep infinity";
    serviceConfig.InaccessiblePaths = [ "-/srv/private" ];
  };
}
