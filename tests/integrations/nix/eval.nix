# Evaluates NixOS configurations with nix/module.nix and the NixOS stand-in (nixos.nix):
#   nix-instantiate --eval --strict --json tests/integrations/nix/eval.nix \
#     --argstr libPath .../lib --argstr configs '["a.nix", ...]'
# gives, per configuration file, what NixOS would write (units, wantedBy, /etc files, packages);
# a wrong option or a failed assertion fails the evaluation with NixOS's message.
{
  libPath,
  configs,
}:
let
  lib = import libPath;
  # the package as `pkgs.wgns` (an overlay's), and the programs physical mode's unit gets on its
  # PATH: their builds are not evaluated here
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = {
    wgns = fake "wgns-0.1.0";
    iw = fake "iw-6.9";
    dhcpcd = fake "dhcpcd-10.1.0";
  };
  eval =
    file:
    (lib.evalModules {
      modules = [
        ./nixos.nix
        ../../../nix/module.nix
        file
        { _module.args.pkgs = pkgs; }
      ];
    }).config.shim.rendered;
in
map (file: {
  inherit file;
  result = eval (/. + file);
}) (builtins.fromJSON configs)
