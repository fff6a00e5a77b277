# For each namespace name, the assertions nix/module.nix fails for a namespace of that name:
#   nix-instantiate --eval --strict --json names.nix --argstr libPath .../lib --argstr names '[...]'
{
  libPath,
  names,
}:
let
  lib = import libPath;
  failed =
    name:
    let
      config =
        (lib.evalModules {
          modules = [
            ./nixos.nix
            ../../../nix/module.nix
            {
              _module.args.pkgs = { };
              services.wgns.package = {
                type = "derivation";
                name = "wgns";
                outPath = "/nix/store/00000000000000000000000000000000-wgns";
              };
              services.wgns.enable = true;
              services.wgns.namespaces.${name}.profile = "/var/lib/wgns/profile.conf";
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
