# services.wgns: WireGuard namespaces (wgns@NAME.service) and services confined to them.
#
# Each services.wgns.namespaces.NAME becomes /etc/wgns/NAME.toml (or NAME.conf) and the instance
# wgns@NAME.service of the unit template the package ships (rendered by wgns itself). A service
# is confined with systemd.services.SVC.wgns.namespace = NAME (or namespaces.NAME.confine), which
# adds to it the directives `wgns confine SVC NAME` writes (wgns/integrations/systemd/confine.py;
# tests/integrations/test_nix_module.py compares the two). docs/nixos.md shows the module in use.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    concatMapStrings
    concatStringsSep
    filterAttrs
    hasPrefix
    hasSuffix
    literalExpression
    mapAttrs'
    mapAttrsToList
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    nameValuePair
    optional
    types
    ;

  cfg = config.services.wgns;
  top = config;

  # The same rules as wgns.system.netns.validate_name: a file name under /run/netns.
  validName =
    name:
    builtins.stringLength name <= 128
    && builtins.match "[A-Za-z0-9_][A-Za-z0-9_.+=@-]*" name != null;
  # wgns@NAME.service is a unit name: systemd refuses '+' and '=' there (confine.check_instance_name)
  validInstance = name: builtins.match ".*[+=].*" name == null;
  # interface labels: wgns.profile.values.parse_label
  validLabel =
    label:
    builtins.stringLength label <= 64 && builtins.match "[A-Za-z0-9_.+=@-]+" label != null;

  # A service to confine (its name in systemd.services): wgns.profile.values.parse_unit_name
  validService =
    svc:
    builtins.stringLength svc <= 255 - 8
    && builtins.match "[-A-Za-z0-9:_.\\]+(@[-A-Za-z0-9:_.@\\]+)?" svc != null;
  otherUnitTypes = [
    "socket"
    "target"
    "device"
    "mount"
    "automount"
    "swap"
    "timer"
    "path"
    "slice"
    "scope"
  ];
  unitTypeOf = unit: lib.findFirst (t: hasSuffix ".${t}" unit) null otherUnitTypes;

  # A path that would put a secret into the world-readable Nix store: a Nix path literal (copied
  # there when used) or a string naming something in it.
  inStore = p: builtins.isPath p || hasPrefix builtins.storeDir (toString p);
  storeWhy = "is a Nix path or in the Nix store, which every user can read: secrets must stay out of it; give the path of a file outside the store as a string";

  # The directives of wgns.integrations.systemd.confine.dropin_text for namespace NS.
  viewOf = ns: "/run/wgns/view/${ns}/etc";
  hiddenPaths = [
    "/run/nscd"
    "/run/systemd/resolve"
    "/run/avahi-daemon"
    "/run/dbus/system_bus_socket"
  ];
  unitOf = ns: "wgns@${ns}.service";

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

  # the namespaces to bring up (one with an invalid name only fails its assertion)
  enabled = filterAttrs (
    name: _: validName name && validInstance name && !(hasSuffix ".conf" name || hasSuffix ".toml" name)
  ) (
    if cfg.enable then cfg.namespaces else { }
  );
  forwarding = lib.attrNames (filterAttrs (_: ns: ns.forwards != [ ]) enabled);
  # `or`: read without declaring them (tests/integrations/nix/nixos.nix need not have them)
  flushesRuleset =
    (top.networking.nftables.enable or false) && (top.networking.nftables.flushRuleset or true);
  isToml = ns: ns.profile == null || hasSuffix ".toml" (toString ns.profile);

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

  svcOpt =
    svc:
    lib.showOption [
      "systemd"
      "services"
      svc
      "wgns"
      "namespace"
    ];
  opt = name: lib.showOption [
    "services"
    "wgns"
    "namespaces"
    name
  ];

  namespaceAssertions =
    name: ns:
    let
      # every profile option, read (so that a wrong type is refused here too)
      inline =
        ns.interfaces != { }
        || ns.backend != "auto"
        || ns.birthplace != null
        || !ns.killSwitch
        || ns.dns != [ ]
        || ns.dnsSearch != [ ]
        || ns.allowHost != [ ]
        || ns.hooks != [ ]
        || ns.forwards != [ ];
      ifaceAssertions = mapAttrsToList (
        label: i:
        let
          where = "${opt name}.interfaces.${lib.showOption [ label ]}";
          inlineKeys = i.privateKeyFile != null || i.address != [ ] || i.peers != [ ] || i.mtu != null;
        in
        [
          {
            assertion = validLabel label;
            message = "${where}: the label must be letters, digits and _ . + = @ - (at most 64 characters).";
          }
          {
            assertion = (i.config != null) != (i.privateKeyFile != null);
            message = "${where}: set either config (a wg-quick .conf) or privateKeyFile, not both nor neither.";
          }
          {
            assertion = i.config == null || !inlineKeys;
            message = "${where}: config cannot be combined with privateKeyFile, address, mtu or peers: put them in the .conf file.";
          }
          {
            assertion =
              i.mtu == null || i.mtu >= 1280 || !builtins.any (a: lib.hasInfix ":" a) i.address;
            message = "${where}.mtu: ${toString i.mtu} is below 1280, the minimum for IPv6 (the interface has an IPv6 address).";
          }
        ]
        ++ map (p: {
          assertion = p == null || !inStore p;
          message = "${where}: ${toString p} ${storeWhy}, e.g. \"/var/lib/wgns/${label}.key\".";
        }) ([ i.config i.privateKeyFile ] ++ map (p: p.presharedKeyFile) i.peers)
      ) ns.interfaces;
    in
    [
      {
        assertion = validName name;
        message = "${opt name}: invalid namespace name: use letters, digits and _ . + = @ - (no '/', not '..', at most 128 characters), as wgns does.";
      }
      {
        assertion = validInstance name;
        message = "${opt name}: '+' and '=' are not allowed in a systemd unit name (wgns@NAME.service): rename the namespace without them.";
      }
      {
        # `wgns up NAME` (wgns@NAME.service) takes such a NAME for the path of a file
        assertion = !(hasSuffix ".conf" name || hasSuffix ".toml" name);
        message = "${opt name}: a name ending in .conf or .toml is read by `wgns up` (wgns@NAME.service) as a file path: name the namespace without it.";
      }
      {
        assertion = (ns.profile != null) != (ns.interfaces != { });
        message = "${opt name}: set either profile (a .conf or .toml file) or interfaces, not both nor neither.";
      }
      {
        assertion = ns.profile == null || !inline;
        message = "${opt name}: with profile set, the profile's keys (interfaces, dns, forwards, killSwitch, ...) belong in that file.";
      }
      {
        assertion = ns.profile == null || !inStore ns.profile;
        message = "${opt name}.profile: ${toString ns.profile} ${storeWhy} (a profile holds the private key), e.g. \"/var/lib/wgns/${name}.conf\".";
      }
      {
        assertion =
          ns.profile == null || hasSuffix ".conf" (toString ns.profile) || hasSuffix ".toml" (toString ns.profile);
        message = "${opt name}.profile: ${toString ns.profile} must end in .conf or .toml.";
      }
      {
        assertion = ns.birthplace != name;
        message = "${opt name}.birthplace: must differ from the namespace itself.";
      }
      {
        assertion = ns.birthplace == null || validName ns.birthplace;
        message = "${opt name}.birthplace: ${builtins.toJSON ns.birthplace} is not a valid namespace name.";
      }
      {
        assertion =
          let
            ids = map (f: "${f.proto}/${toString f.hostPort}") ns.forwards;
          in
          lib.length ids == lib.length (lib.unique ids);
        message = "${opt name}.forwards: two forwards of the same hostPort and proto.";
      }
      {
        assertion = lib.length ns.allowHost == lib.length (lib.unique ns.allowHost);
        message = "${opt name}.allowHost: lists a port twice.";
      }
    ]
    ++ map (unit: {
      assertion = unitTypeOf unit == null;
      message = "${opt name}.confine: ${builtins.toJSON unit} is a ${toString (unitTypeOf unit)} unit: only services can be confined (confine the service it starts).";
    }) ns.confine
    ++ lib.concatLists ifaceAssertions;

  confined = filterAttrs (_: s: s.wgns.namespace != null) top.systemd.services;
in
{
  options.services.wgns = {
    enable = mkEnableOption "wgns, WireGuard VPNs confined to network namespaces";

    package = mkOption {
      type = types.package;
      default = pkgs.wgns or (pkgs.callPackage ./package.nix { });
      defaultText = literalExpression "pkgs.wgns or (pkgs.callPackage ./nix/package.nix { })";
      description = "The wgns package: its wgns@.service template is the one used.";
    };

    namespaces = mkOption {
      type = types.attrsOf (types.submodule namespaceOptions);
      default = { };
      example = literalExpression ''
        {
          media = {
            interfaces.wg0 = {
              privateKeyFile = "/var/lib/wgns/media.key";
              address = [ "10.64.0.2/32" ];
              peers = [ { publicKey = "..."; allowedIPs = [ "0.0.0.0/0" "::/0" ]; endpoint = "vpn.example.net:51820"; } ];
            };
            dns = [ "10.64.0.1" ];
            confine = [ "jellyfin" ];
          };
        }
      '';
      description = ''
        Confined namespaces, each brought up by wgns@NAME.service. A name may be as long as
        wgns allows (128 characters): interface names are derived, not taken from it.
      '';
    };
  };

  # Every service gets `wgns.namespace`: confine it without copying or changing its module.
  options.systemd.services = mkOption {
    type = types.attrsOf (
      types.submodule (
        { name, config, ... }:
        {
          options.wgns.namespace = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "media";
            description = ''
              Run this service in the wgns namespace of that name (one of
              services.wgns.namespaces): its only network is the tunnel, its /etc/resolv.conf,
              hosts and nsswitch.conf are the namespace's, and the host's resolvers (nscd,
              systemd-resolved, avahi, D-Bus) are out of its reach. It starts and stops with
              wgns@NAME.service. These are the directives `wgns confine` writes.
            '';
          };
          config = mkIf (config.wgns.namespace != null) (
            let
              ns = config.wgns.namespace;
            in
            {
              bindsTo = [ (unitOf ns) ];
              after = [ (unitOf ns) ];
              unitConfig.AssertPathIsMountPoint = viewOf ns;
              serviceConfig = {
                NetworkNamespacePath = "/run/netns/${ns}";
                BindReadOnlyPaths = [ "${viewOf ns}:/etc" ];
                # one line, as wgns writes it (a list, so that the service's own entries add up)
                InaccessiblePaths = [ (concatStringsSep " " (map (p: "-" + p) hiddenPaths)) ];
              };
            }
          );
        }
      )
    );
  };

  config = mkMerge [
    {
      assertions = mapAttrsToList (svc: s: {
        assertion = cfg.enable && cfg.namespaces ? ${s.wgns.namespace};
        message = "${svcOpt svc}: ${builtins.toJSON s.wgns.namespace} is not a namespace of services.wgns.namespaces${
          lib.optionalString (!cfg.enable) " (and services.wgns.enable is false)"
        }.";
      }) confined
      ++ mapAttrsToList (svc: _: {
        assertion = validService svc || hasSuffix "@" svc;
        message = "${svcOpt svc}: ${builtins.toJSON "${svc}.service"} is not a valid systemd unit name.";
      }) confined
      ++ mapAttrsToList (svc: _: {
        assertion = !hasSuffix "@" svc;
        message = "${svcOpt svc}: ${svc}.service is a template: confine an instance of it (e.g. ${svc}NAME).";
      }) confined
      ++ mapAttrsToList (svc: _: {
        assertion = !hasPrefix "wgns@" svc;
        message = "${svcOpt svc}: ${svc} is the unit of a wgns namespace itself: it cannot be confined.";
      }) confined;
    }

    (mkIf cfg.enable {
      assertions = lib.concatLists (mapAttrsToList namespaceAssertions cfg.namespaces);
      warnings = optional (flushesRuleset && forwarding != [ ]) (
        "services.wgns: networking.nftables.flushRuleset is true, so every reload of "
        + "nftables.service deletes all tables of the host's namespace, among them the port "
        + "forwards of ${concatStringsSep ", " (map (n: "wgns@${n}.service") forwarding)} "
        + "until they are restarted: set networking.nftables.flushRuleset = false (NixOS then "
        + "deletes only its own tables)."
      );

      systemd.packages = [ cfg.package ];
      environment.systemPackages = [ cfg.package ];

      # a profile file is linked where it is, never copied into the store (a path literal would
      # be: it is refused by an assertion and left out here)
      environment.etc = mapAttrs' (
        name: ns:
        if ns.profile != null then
          nameValuePair "wgns/${name}.${if isToml ns then "toml" else "conf"}" {
            source = toString ns.profile;
          }
        else
          nameValuePair "wgns/${name}.toml" { text = toProfile ns; }
      ) (filterAttrs (_: ns: ns.profile == null || !inStore ns.profile) enabled);

      systemd.services = mkMerge (
        mapAttrsToList (name: ns: {
          "wgns@${name}" = {
            # an instance of the package's template: NixOS writes only a drop-in for it
            overrideStrategy = "asDropin";
            wantedBy = [ "multi-user.target" ];
            # a changed profile is re-read in place (`wgns up --reload`, ExecReload=)
            reloadTriggers = optional (ns.profile == null) (toProfile ns);
          };
        }) enabled
        ++ mapAttrsToList (
          name: ns:
          builtins.listToAttrs (
            map (svc: nameValuePair (lib.removeSuffix ".service" svc) { wgns.namespace = name; }) (
              lib.filter (unit: unitTypeOf unit == null) ns.confine
            )
          )
        ) enabled
      );
    })
  ];
}
