# services.wgns: WireGuard namespaces (wgns@NAME.service) and services confined to them.
#
# Each services.wgns.namespaces.NAME becomes /etc/wgns/NAME.toml (or NAME.conf) and the instance
# wgns@NAME.service of the unit template the package ships (rendered by wgns itself). A service
# is confined with systemd.services.SVC.wgns.namespace = NAME (or namespaces.NAME.confine), which
# adds to it the directives `wgns confine SVC NAME` writes (wgns/integrations/systemd/confine.py;
# tests/integrations/test_nix_module.py compares the two). services.wgns.physical is physical mode
# at boot: the instance wgns-physical@PROFILE.service of the package's other template, its
# options in the WGNS_PHYSICAL_ARGS the template leaves for them; NixOS's dhcpcd and
# wpa_supplicant units are left to wgns, which moves them at run time (test_nix_physical.py).
# docs/nixos.md shows the module in use.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
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
    "/run/dbus"
  ];
  unitOf = ns: "wgns@${ns}.service";

  inherit (import ./profile.nix { inherit lib; }) namespaceOptions toProfile;

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

  # The checks of a profile given as options or as a file, at option path AT (a namespace's,
  # or physical mode's, which has no birthplace, allowHost nor forwards); NAME: its file's name.
  profileAssertions =
    at: name: ns:
    let
      # every profile option, read (so that a wrong type is refused here too)
      inline =
        ns.interfaces != { }
        || ns.backend != "auto"
        || (ns.birthplace or null) != null
        || !ns.killSwitch
        || ns.dns != [ ]
        || ns.dnsSearch != [ ]
        || (ns.allowHost or [ ]) != [ ]
        || ns.hooks != [ ]
        || (ns.forwards or [ ]) != [ ];
      ifaceAssertions = mapAttrsToList (
        label: i:
        let
          where = "${at}.interfaces.${lib.showOption [ label ]}";
          inlineKeys =
            i.privateKeyFile != null
            || i.address != [ ]
            || i.listenPort != null
            || i.fwmark != null
            || i.mtu != null
            || i.table != null
            || i.peers != [ ];
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
            message = "${where}: config cannot be combined with privateKeyFile, address, listenPort, fwmark, mtu, table or peers: put them in the .conf file.";
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
        assertion = (ns.profile != null) != (ns.interfaces != { });
        message = "${at}: set either profile (a .conf or .toml file) or interfaces, not both nor neither.";
      }
      {
        assertion = ns.profile == null || !inline;
        message = "${at}: with profile set, the profile's keys (interfaces, dns, forwards, killSwitch, ...) belong in that file.";
      }
      {
        assertion = ns.profile == null || !inStore ns.profile;
        message = "${at}.profile: ${toString ns.profile} ${storeWhy} (a profile holds the private key), e.g. \"/var/lib/wgns/${name}.conf\".";
      }
      {
        assertion =
          ns.profile == null || hasSuffix ".conf" (toString ns.profile) || hasSuffix ".toml" (toString ns.profile);
        message = "${at}.profile: ${toString ns.profile} must end in .conf or .toml.";
      }
    ]
    ++ lib.concatLists ifaceAssertions;

  namespaceAssertions =
    name: ns:
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
    ++ lib.optional (phys.enable && name == physicalNs) {
      assertion = false;
      message = "${opt name}: ${physicalNs} is the namespace of physical mode (services.wgns.physical), whose interfaces it holds: name this namespace otherwise.";
    }
    ++ profileAssertions (opt name) name ns;

  confined = filterAttrs (_: s: s.wgns.namespace != null) top.systemd.services;

  # ---- physical mode: wgns-physical@PROFILE.service, the unit the package ships
  phys = cfg.physical;
  physicalAt = "services.wgns.physical";
  # the namespace `wgns physical up` makes by default, the only one the unit brings up
  # (wgns.lifecycle.physical.DEFAULT_NAME)
  physicalNs = "physical";
  physicalUnit = "wgns-physical@${phys.profileName}";
  # the unit's ExecStart= is `wgns physical up $WGNS_PHYSICAL_ARGS %i`: the options go there
  physicalArgs = concatStringsSep " " (
    [
      "--deadman"
      (toString phys.deadman)
    ]
    ++ lib.concatMap (i: [
      "--iface"
      i
    ]) phys.moveInterfaces
  );
  # an interface name the kernel accepts (dev_valid_name), and one word for systemd
  validIfname =
    n: builtins.stringLength n <= 15 && n != "." && n != ".." && builtins.match "[^/:[:space:]]+" n != null;
  physicalProfileKeys = [
    "profile"
    "backend"
    "killSwitch"
    "dns"
    "dnsSearch"
    "interfaces"
    "hooks"
  ];
  physicalOptions = {
    # a namespace's profile options but those physical mode refuses (birthplace: the tunnel is
    # born in `physical`; forwards, allowHost; confine: services go in namespaces)
    options = lib.getAttrs physicalProfileKeys (namespaceOptions { name = "<profileName>"; }).options // {
      enable = mkEnableOption "physical mode at boot (wgns-physical@<profileName>.service): the machine's interfaces moved into namespace `physical`, the WireGuard tunnel the main namespace's only way out";
      profileName = mkOption {
        type = types.str;
        default = "physical";
        example = "home";
        description = ''
          The profile's name: /etc/wgns/NAME.conf or NAME.toml, and the instance of the unit,
          wgns-physical@NAME.service (`systemctl stop wgns-physical@NAME` gives the network back).
          The namespace is always `physical`.
        '';
      };
      moveInterfaces = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "enp4s0"
          "wlp6s0"
        ];
        description = ''
          The interfaces to move (`--iface`); a wireless one moves with its phy. Empty: those
          carrying the default routes when the unit starts, and every wireless phy.
        '';
      };
      deadman = mkOption {
        type = types.ints.unsigned;
        default = 30;
        example = 120;
        description = ''
          Seconds to wait for the tunnel's first handshake before everything is given back
          (`--deadman`; 0: never). Sign in to a captive portal within them.
        '';
      };
    };
  };

  physicalAssertions = [
    {
      assertion = cfg.enable;
      message = "${physicalAt}.enable: set services.wgns.enable = true as well (its package ships wgns-physical@.service).";
    }
    {
      assertion =
        validName phys.profileName
        && validInstance phys.profileName
        && !(hasSuffix ".conf" phys.profileName || hasSuffix ".toml" phys.profileName);
      message = "${physicalAt}.profileName: ${builtins.toJSON phys.profileName} cannot name /etc/wgns/NAME.conf and wgns-physical@NAME.service: use letters, digits and _ . @ - (at most 128 characters, not ending in .conf or .toml).";
    }
    {
      assertion = !(cfg.namespaces ? ${phys.profileName});
      message = "${physicalAt}.profileName: ${phys.profileName} is a namespace of services.wgns.namespaces too, whose profile is /etc/wgns/${phys.profileName}.toml as well: choose another name.";
    }
    {
      assertion = !(top.networking.networkmanager.enable or false);
      message = "${physicalAt}: networking.networkmanager.enable is true: NetworkManager would fight wgns over the interfaces physical mode moves (wgns refuses it at run time too). Physical mode takes dhcpcd and wpa_supplicant or iwd along: set networking.networkmanager.enable = false and use networking.wireless (or networking.wireless.iwd) with DHCP.";
    }
    {
      assertion = !((top.networking.useNetworkd or false) || (top.systemd.network.enable or false));
      message = "${physicalAt}: systemd-networkd (networking.useNetworkd, systemd.network.enable) would not follow the interfaces into namespace ${physicalNs}: physical mode takes along dhcpcd/dhclient and wpa_supplicant/iwd only. Set networking.useNetworkd = false and systemd.network.enable = false.";
    }
    {
      assertion =
        !((top.networking.wireless.enable or false) && (top.networking.wireless.interfaces or [ ]) != [ ]);
      message = "${physicalAt}: networking.wireless.interfaces is set: each wpa_supplicant-IF.service then requires IF's device unit, which is gone from the main namespace once IF is in ${physicalNs}, so it could not start there. Leave networking.wireless.interfaces empty: the one wpa_supplicant.service finds the wireless interfaces where it runs.";
    }
    {
      assertion = lib.length phys.moveInterfaces == lib.length (lib.unique phys.moveInterfaces);
      message = "${physicalAt}.moveInterfaces: lists an interface twice.";
    }
  ]
  ++ map (i: {
    assertion = validIfname i;
    message = "${physicalAt}.moveInterfaces: ${builtins.toJSON i} is not an interface name (at most 15 characters, none of / : or blanks).";
  }) phys.moveInterfaces
  ++ profileAssertions physicalAt phys.profileName phys;
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

  options.services.wgns.physical = mkOption {
    type = types.submodule physicalOptions;
    default = { };
    example = literalExpression ''
      {
        enable = true;
        profileName = "home";
        profile = "/var/lib/wgns/home.conf";
        moveInterfaces = [ "enp4s0" "wlp6s0" ];
      }
    '';
    description = ''
      Physical mode (`wgns physical up`, docs/physical.md) at boot, by the package's
      wgns-physical@<profileName>.service. The profile is a file outside the store (`profile`)
      or written from the options, as for a namespace. NixOS's own dhcpcd.service and
      wpa_supplicant.service (or iwd.service) are left as they are: wgns moves them into
      namespace `physical` when it comes up (a runtime drop-in, the same for every
      distribution) and back into the main namespace when it goes down.
    '';
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
      }) confined
      ++ mapAttrsToList (svc: _: {
        assertion = !hasPrefix "wgns-physical@" svc;
        message = "${svcOpt svc}: ${svc} is physical mode's own unit: it cannot be confined.";
      }) confined;
    }

    (mkIf phys.enable { assertions = physicalAssertions; })

    (mkIf (cfg.enable && phys.enable) {
      environment.etc = lib.optionalAttrs (phys.profile == null || !inStore phys.profile) {
        "wgns/${phys.profileName}.${if isToml phys then "toml" else "conf"}" =
          if phys.profile != null then
            { source = toString phys.profile; }
          else
            {
              text = toProfile (
                phys
                // {
                  birthplace = null;
                  allowHost = [ ];
                  forwards = [ ];
                }
              );
            };
      };
      systemd.services.${physicalUnit} = {
        # an instance of the package's template, as wgns@NAME: NixOS writes only a drop-in
        overrideStrategy = "asDropin";
        wantedBy = [ "multi-user.target" ];
        environment.WGNS_PHYSICAL_ARGS = physicalArgs;
        # iw moves a wireless phy; dhcpcd runs inside `physical` when no dhcpcd.service does
        path = [
          pkgs.iw
          pkgs.dhcpcd
        ];
        # `nixos-rebuild switch` does not take the machine's network away and back for a
        # changed profile: `systemctl restart ${physicalUnit}` (or a reboot) applies it
        restartIfChanged = false;
      };
    })

    (mkIf cfg.enable {
      assertions = lib.concatLists (mapAttrsToList namespaceAssertions cfg.namespaces);
      warnings =
        optional (flushesRuleset && phys.enable) (
          "services.wgns.physical: networking.nftables.flushRuleset is true, so every reload of "
          + "nftables.service deletes all tables of the main namespace, among them physical "
          + "mode's kill switch (${physicalUnit}.service) until it is restarted: set "
          + "networking.nftables.flushRuleset = false (NixOS then deletes only its own tables)."
        )
        ++ optional (flushesRuleset && forwarding != [ ]) (
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
          }
          # its tunnel leaves through physical mode's namespace: up after it, down before it
          // lib.optionalAttrs (phys.enable && ns.birthplace == physicalNs) {
            after = [ "${physicalUnit}.service" ];
            bindsTo = [ "${physicalUnit}.service" ];
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
