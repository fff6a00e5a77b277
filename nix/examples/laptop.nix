# The whole laptop through the tunnel, on ethernet and on wifi: both moved into namespace
# `physical`, where NixOS's own dhcpcd and wpa_supplicant follow them; the main namespace keeps
# lo and the tunnel (the setup with a physical-netns service, a wg0 oneshot and copies of the
# wpa_supplicant and dhcpcd modules running them with `ip netns exec physical`).
{
  services.wgns.enable = true;
  services.wgns.physical = {
    enable = true;
    profileName = "home";
    profile = "/var/lib/wgns/home.conf";
    moveInterfaces = [
      "enp4s0"
      "wlp6s0"
    ];
    deadman = 60;
  };
  # unchanged: wgns moves wpa_supplicant.service and dhcpcd.service into `physical` at run time
  networking.wireless.enable = true;

  # a second tunnel for some services, its ciphertext sent from where the interfaces are
  services.wgns.namespaces.media = {
    interfaces.wg0.config = "/var/lib/wgns/media.conf";
    birthplace = "physical";
  };
}
