# `nix-build` from a checkout: wgns built with the nixpkgs on NIX_PATH (or the one given).
{
  pkgs ? import <nixpkgs> { },
}:
pkgs.callPackage ./nix/package.nix { }
