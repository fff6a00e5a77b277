# For each name, the assertions nix/module.nix fails when a namespace (kind = "namespace") or a
# confined service (kind = "service", confined to a namespace "media") has that name:
#   nix-instantiate --eval --strict --json names.nix --argstr libPath .../lib \
#     --argstr kind namespace --argstr names '[...]'
{
  libPath,
  kind,
  names,
}:
let
  lib = import libPath;
  profile = "/var/lib/wgns/profile.conf";
  settings =
    name:
    if kind == "namespace" then
      { services.wgns.namespaces.${name}.profile = profile; }
    else
      {
        services.wgns.namespaces.media.profile = profile;
        systemd.services.${name}.wgns.namespace = "media";
      };
  failed =
    name:
    let
      config =
        (lib.evalModules {
          modules = [
            ./nixos.nix
            ../../../nix/module.nix
            (settings name)
            {
              _module.args.pkgs = { };
              services.wgns.package = {
                type = "derivation";
                name = "wgns";
                outPath = "/nix/store/00000000000000000000000000000000-wgns";
              };
              services.wgns.enable = true;
            }
          ];
        }).config;
    in
    map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
in
map (name: {
  inherit name;
  failed = failed name;
}) (builtins.fromJSON names)
