# The profile of a wgns namespace as NixOS options (the TOML profile's keys, docs/profile.md,
# in camelCase) and the TOML text wgns reads from them; used by nix/module.nix.
{ lib }:

let
  inherit (lib)
    concatMapStrings
    filterAttrs
    literalExpression
    mapAttrsToList
    mkOption
    types
    ;
in
rec {
  secretPath =
    what:
    mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/wgns/${what}";
      description = ''
        Absolute path of the file, outside the Nix store (it is read by wgns when the
        namespace comes up, never copied). Keep it mode 0600.
      '';
    };

  peerOptions = {
    options = {
      publicKey = mkOption {
        type = types.str;
        example = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        description = "The peer's public key (`public_key`).";
      };
      presharedKeyFile = secretPath "media.psk" // {
        description = "A file holding the preshared key (`preshared_key_file`), outside the store.";
      };
      allowedIPs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "0.0.0.0/0"
          "::/0"
        ];
        description = "Networks routed to this peer (`allowed_ips`).";
      };
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "vpn.example.net:51820";
        description = "`HOST:PORT` of the peer (`endpoint`), looked up in the birthplace namespace.";
      };
      persistentKeepalive = mkOption {
        type = types.nullOr (types.either (types.ints.between 0 65535) (types.enum [ "off" ]));
        default = null;
        example = 25;
        description = "Seconds between keepalives (`persistent_keepalive`).";
      };
    };
  };

  interfaceOptions = {
    options = {
      config = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/lib/wgns/mullvad-se.conf";
        description = ''
          A wg-quick `.conf` (`config`) outside the Nix store, used whole: its Address, DNS,
          MTU and hooks too. Exclusive with the other options of the interface.
        '';
      };
      privateKeyFile = secretPath "media.key" // {
        description = ''
          A file holding the interface's private key (`private_key_file`), outside the store.
          There is no option for the key itself: it would end up in the world-readable store.
        '';
      };
      address = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "10.64.0.2/32"
          "fc00:bbbb::2/128"
        ];
        description = "Addresses of the interface (`address`).";
      };
      listenPort = mkOption {
        type = types.nullOr types.port;
        default = null;
        description = "UDP port (`listen_port`); random when unset.";
      };
      fwmark = mkOption {
        type = types.nullOr (types.either types.ints.u32 types.str);
        default = null;
        example = "0x1234";
        description = "Firewall mark of the tunnel's packets (`fwmark`).";
      };
      mtu = mkOption {
        type = types.nullOr (types.ints.between 576 65535);
        default = null;
        example = 1380;
        description = ''
          MTU of the interface (`mtu`), applied by wgns; at least 1280 with an IPv6 address.
          Unset: wgns's automatic choice.
        '';
      };
      table = mkOption {
        type = types.nullOr (types.either types.ints.unsigned types.str);
        default = null;
        example = "off";
        description = "Routing table (`table`): `auto`, `off`, `main`, or a number.";
      };
      peers = mkOption {
        type = types.listOf (types.submodule peerOptions);
        default = [ ];
        description = "The interface's peers (`[[interface.peer]]`).";
      };
    };
  };

  hookOptions = {
    options = {
      when = mkOption {
        type = types.enum [
          "pre-up"
          "post-up"
          "pre-down"
          "post-down"
        ];
        description = "When the command runs (`when`).";
      };
      run = mkOption {
        type = types.str;
        example = "logger wgns up";
        description = "A shell command (`run`).";
      };
      netns = mkOption {
        type = types.enum [
          "inside"
          "birthplace"
        ];
        default = "birthplace";
        description = "Where it runs (`netns`).";
      };
    };
  };

  forwardOptions = {
    options = {
      hostPort = mkOption {
        type = types.ints.between 1 65535;
        example = 9000;
        description = "The port in the host's namespace (`host_port`).";
      };
      nsPort = mkOption {
        type = types.nullOr (types.ints.between 1 65535);
        default = null;
        description = "The port inside the namespace (`ns_port`); unset: `hostPort`.";
      };
      proto = mkOption {
        type = types.enum [
          "tcp"
          "udp"
        ];
        default = "tcp";
        description = "The protocol (`proto`).";
      };
      from = mkOption {
        type = types.nonEmptyListOf types.str;
        default = [
          "127.0.0.0/8"
          "::1/128"
        ];
        example = [
          "127.0.0.0/8"
          "::1/128"
          "100.64.0.0/10"
        ];
        description = "Networks that may connect (`from`), without host bits.";
      };
      mode = mkOption {
        type = types.enum [
          "nat"
          "relay"
        ];
        default = "nat";
        description = "How the connection is forwarded (`mode`, docs/forwards.md).";
      };
    };
  };

  namespaceOptions =
    { name, ... }:
    {
      options = {
        profile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/var/lib/wgns/media.conf";
          description = ''
            An existing profile, a wg-quick `.conf` or a wgns `.toml`, outside the Nix store
            (it holds the private key): linked as /etc/wgns/${name}.conf or .toml. Exclusive
            with `interfaces` and the other profile options, which write the TOML profile here.
          '';
        };
        backend = mkOption {
          type = types.enum [
            "auto"
            "kernel"
            "userspace"
          ];
          default = "auto";
          description = "The WireGuard implementation (`backend`): kernel, wireguard-go, or auto.";
        };
        birthplace = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "physical";
          description = "An existing namespace for the tunnel's UDP sockets (`birthplace`).";
        };
        killSwitch = mkOption {
          type = types.bool;
          default = true;
          description = "The nftables kill switch inside the namespace (`kill_switch`).";
        };
        dns = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "10.64.0.1" ];
          description = ''
            DNS servers (`dns`), after the interfaces' own; each must be inside the tunnel.
            They become the namespace's resolv.conf, which confined services see as /etc/resolv.conf.
          '';
        };
        dnsSearch = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Search domains (`dns_search`).";
        };
        allowHost = mkOption {
          type = types.listOf (types.ints.between 1 65535);
          default = [ ];
          example = [ 3128 ];
          description = "Host ports the namespace may reach over the forward veth (`allow_host`).";
        };
        interfaces = mkOption {
          type = types.attrsOf (types.submodule interfaceOptions);
          default = { };
          description = "The WireGuard interfaces (`[[interface]]`), by label.";
        };
        hooks = mkOption {
          type = types.listOf (types.submodule hookOptions);
          default = [ ];
          description = "Commands run around up and down (`[[hook]]`).";
        };
        forwards = mkOption {
          type = types.listOf (types.submodule forwardOptions);
          default = [ ];
          example = literalExpression ''[ { hostPort = 9000; from = [ "127.0.0.0/8" "::1/128" "100.64.0.0/10" ]; } ]'';
          description = "Ports of the host forwarded into the namespace (`[[forward]]`).";
        };
        confine = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "jellyfin"
            "sonarr"
          ];
          description = ''
            Services (names in `systemd.services`) to run in this namespace: the same as
            `systemd.services.SVC.wgns.namespace = "${name}"`.
          '';
        };
      };
    };

  # The TOML profile, written out here: lib has no TOML generator without pkgs, and JSON's
  # strings, numbers, booleans and arrays are TOML's too.
  tomlKeys =
    attrs:
    concatStrings (
      mapAttrsToList (k: v: "${k} = ${builtins.toJSON v}\n") (filterAttrs (_: v: v != null && v != [ ]) attrs)
    );
  concatStrings = builtins.concatStringsSep "";
  toProfile =
    ns:
    tomlKeys {
      inherit (ns) backend birthplace dns;
      kill_switch = ns.killSwitch;
      dns_search = ns.dnsSearch;
      allow_host = ns.allowHost;
    }
    + concatStrings (
      mapAttrsToList (
        label: i:
        "\n[[interface]]\n"
        + tomlKeys (
          {
            name = label;
          }
          // (
            if i.config != null then
              { config = toString i.config; }
            else
              {
                private_key_file = if i.privateKeyFile == null then null else toString i.privateKeyFile;
                inherit (i) address fwmark mtu table;
                listen_port = i.listenPort;
              }
          )
        )
        + concatMapStrings (
          p:
          "\n[[interface.peer]]\n"
          + tomlKeys {
            public_key = p.publicKey;
            preshared_key_file = if p.presharedKeyFile == null then null else toString p.presharedKeyFile;
            allowed_ips = p.allowedIPs;
            inherit (p) endpoint;
            persistent_keepalive = p.persistentKeepalive;
          }
        ) (if i.config != null then [ ] else i.peers)
      ) ns.interfaces
    )
    + concatMapStrings (h: "\n[[hook]]\n" + tomlKeys { inherit (h) when run netns; }) ns.hooks
    + concatMapStrings (
      f:
      "\n[[forward]]\n"
      + tomlKeys {
        host_port = f.hostPort;
        ns_port = f.nsPort;
        inherit (f) proto from mode;
      }
    ) ns.forwards;
}
