# flake.nix's outputs, called with a stand-in for its nixpkgs input (its lib, and for each
# system a package set whose callPackage names what it builds), and its NixOS module evaluated
# with the NixOS stand-in and nix/examples/media.nix:
#   nix-instantiate --eval --strict --json flake-outputs.nix --argstr libPath .../lib
{ libPath }:
let
  lib = import libPath;
  pkgsFor = system: {
    stdenv.hostPlatform.system = system;
    # callPackage ./nix/package.nix { } as a fake derivation: the build is not evaluated here
    callPackage = path: _: {
      type = "derivation";
      name = "${baseNameOf (toString path)}-for-${system}";
      outPath = "/nix/store/00000000000000000000000000000000-wgns-${system}";
    };
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor;
  };
  flake = import ../../../flake.nix;
  self = flake.outputs { inherit self nixpkgs; };
  system = (lib.evalModules {
    modules = [
      ./nixos.nix
      self.nixosModules.default
      ../../../nix/examples/media.nix
      { _module.args.pkgs = pkgsFor "x86_64-linux"; }
    ];
  }).config;
  overlaid = lib.fix (final: self.overlays.default final (pkgsFor "x86_64-linux") // pkgsFor "x86_64-linux");
in
{
  description = flake.description;
  inputs = builtins.attrNames flake.inputs;
  packages = lib.mapAttrs (_: ps: lib.mapAttrs (_: p: p.name) ps) self.packages;
  overlay = overlaid.wgns.name;
  moduleRendered = system.shim.rendered;
  modulePackage = system.services.wgns.package.name;
}
