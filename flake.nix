{
  description = "wgns: WireGuard VPNs confined to Linux network namespaces";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: prev: { wgns = final.callPackage ./nix/package.nix { }; };

      packages = forAllSystems (pkgs: rec {
        wgns = pkgs.callPackage ./nix/package.nix { };
        default = wgns;
      });

      # services.wgns; its package defaults to this flake's build for the system's platform
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.wgns.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
    };
}
