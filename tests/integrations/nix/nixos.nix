# Stands in for NixOS in the tests: nixpkgs lib has no NixOS modules, so this declares the few
# options nix/module.nix sets or reads (assertions, warnings, environment.etc/systemPackages,
# networking.nftables, the network managers physical mode checks, systemd.packages and
# systemd.services) and renders services the way NixOS does (nixos/lib/systemd-lib.nix): a full
# unit, or with overrideStrategy = "asDropin" a drop-in NAME.service.d/overrides.conf; [Unit]
# from after/bindsTo/wants/requires/reload triggers/restartIfChanged and unitConfig, [Service]
# from environment and path (Environment="K=V" lines, PATH without NixOS's default tools) and
# serviceConfig, a list as one line per element, [Install] from wantedBy (besides the .wants
# links). It is not NixOS: only what the module uses.
{ lib, config, ... }:
let
  inherit (lib) mkOption types;
  value = types.oneOf [
    types.bool
    types.int
    types.str
    (types.listOf (types.oneOf [ types.bool types.int types.str ]))
  ];
  serviceOptions =
    { name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        description = mkOption {
          type = types.str;
          default = "";
        };
        overrideStrategy = mkOption {
          type = types.enum [
            "asDropinIfExists"
            "asDropin"
          ];
          default = "asDropinIfExists";
        };
        wantedBy = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        after = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        bindsTo = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        wants = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        requires = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        reloadTriggers = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
        environment = mkOption {
          type = types.attrsOf types.str;
          default = { };
        };
        path = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        unitConfig = mkOption {
          type = types.attrsOf value;
          default = { };
        };
        serviceConfig = mkOption {
          type = types.attrsOf value;
          default = { };
        };
      };
    };

  line = k: v: if builtins.isBool v then "${k}=${lib.boolToString v}\n" else "${k}=${toString v}\n";
  section =
    attrs:
    lib.concatStrings (
      lib.mapAttrsToList (k: v: lib.concatMapStrings (line k) (lib.toList v)) attrs
    );
  render =
    name: s:
    let
      unit =
        lib.optionalAttrs (s.description != "") { Description = s.description; }
        // lib.optionalAttrs (s.after != [ ]) { After = toString s.after; }
        // lib.optionalAttrs (s.bindsTo != [ ]) { BindsTo = toString s.bindsTo; }
        // lib.optionalAttrs (s.wants != [ ]) { Wants = toString s.wants; }
        // lib.optionalAttrs (s.requires != [ ]) { Requires = toString s.requires; }
        # NixOS writes the triggers to a store file and names it: a hash stands in for the file
        // lib.optionalAttrs (s.reloadTriggers != [ ]) {
          X-Reload-Triggers = "/nix/store/${builtins.hashString "sha256" (toString s.reloadTriggers)}-X-Reload-Triggers-${name}";
        }
        // lib.optionalAttrs (!s.restartIfChanged) { X-RestartIfChanged = false; }
        // s.unitConfig;
      env =
        s.environment
        // lib.optionalAttrs (s.path != [ ]) {
          PATH = "${lib.makeBinPath s.path}:${lib.makeSearchPathOutput "bin" "sbin" s.path}";
        };
    in
    "[Unit]\n"
    + section unit
    + "\n[Service]\n"
    + lib.concatStrings (lib.mapAttrsToList (k: v: "Environment=${builtins.toJSON "${k}=${v}"}\n") env)
    + section s.serviceConfig
    + lib.optionalString (s.wantedBy != [ ]) "\n[Install]\nWantedBy=${toString s.wantedBy}\n";

  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # read by physical mode's assertions
    networking.networkmanager.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.useNetworkd = mkOption {
      type = types.bool;
      default = false;
    };
    systemd.network.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.wireless.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.wireless.interfaces = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    networking.nftables.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.nftables.flushRuleset = mkOption {
      type = types.bool;
      default = true;
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment.etc = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.text = mkOption {
            type = types.nullOr types.lines;
            default = null;
          };
          options.source = mkOption {
            type = types.nullOr types.path;
            default = null;
          };
        }
      );
      default = { };
    };
    systemd.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule serviceOptions);
      default = { };
    };
    # what NixOS would make of the above (read by eval.nix)
    shim.rendered = mkOption {
      type = types.unspecified;
      readOnly = true;
    };
  };

  config.shim.rendered =
    if failed != [ ] then
      # the message NixOS's top-level.nix throws
      throw "\nFailed assertions:\n${lib.concatStringsSep "\n" (map (x: "- ${x}") failed)}"
    else
      {
        units = lib.mapAttrs' (
          name: s:
          lib.nameValuePair (
            if s.overrideStrategy == "asDropin" then "${name}.service.d/overrides.conf" else "${name}.service"
          ) (render name s)
        ) (lib.filterAttrs (_: s: s.enable) config.systemd.services);
        wantedBy = lib.mapAttrs (_: s: s.wantedBy) config.systemd.services;
        etc = lib.mapAttrs (_: e: { inherit (e) text; source = if e.source == null then null else toString e.source; }) config.environment.etc;
        packages = map (p: p.name) config.systemd.packages;
        inherit (config) warnings;
      };
}
