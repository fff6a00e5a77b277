# wgns as a Nix package: `callPackage ./nix/package.nix { }` (default.nix and flake.nix do it).
# Built from this checkout with its own pyproject.toml (setuptools, no Python dependencies);
# the programs wgns runs are put on its PATH, and the systemd units are rendered by wgns itself
# (python -m wgns.integrations.systemd.units) so that they are the ones scripts/install.sh writes.
{
  lib,
  python3Packages,
  iproute2,
  nftables,
  wireguard-tools,
  wireguard-go,
  kmod,
  util-linux,
  procps,
  curl,
  dnsutils,
  iw,
}:

let
  project = (lib.importTOML ../pyproject.toml).project;
in
python3Packages.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true;

  # what the build reads: pyproject.toml, the README it names, the package, the unit templates
  # (lib.cleanSourceWith rather than lib.fileset: it evaluates with older Nix too)
  src = lib.cleanSourceWith {
    name = "wgns-source";
    src = ../.;
    filter =
      path: type:
      let
        rel = lib.removePrefix (toString ../. + "/") (toString path);
        under = dir: rel == dir || lib.hasPrefix "${dir}/" rel;
      in
      lib.elem rel [
        "pyproject.toml"
        "README.md"
        "scripts"
      ]
      || (under "wgns" && baseNameOf rel != "__pycache__" && !lib.hasSuffix ".pyc" rel)
      || under "scripts/systemd";
  };

  # pyproject.toml's [build-system] requires and [project] dependencies (none: the standard
  # library only); tests/integrations/test_nix_package.py checks that the two agree
  build-system = [ python3Packages.setuptools ];
  dependencies = [ ];

  # what wgns runs (scripts/packages/core.txt on Debian), found before anything on the caller's PATH
  makeWrapperArgs = [
    "--prefix PATH : ${
      lib.makeBinPath [
        iproute2
        nftables
        wireguard-tools
        wireguard-go
        kmod
        util-linux
        procps
        curl
        dnsutils
        iw
      ]
    }"
  ];

  postInstall = ''
    PYTHONPATH=$PWD ${python3Packages.python.interpreter} -m wgns.integrations.systemd.units \
      --wgns $out/bin/wgns \
      --unit-dir $out/lib/systemd/system \
      --generator-dir $out/lib/systemd/system-generators
  '';

  # the test suite needs root, network namespaces and nftables: not available in the build sandbox
  doCheck = false;
  pythonImportsCheck = [ "wgns" ];

  meta = {
    description = project.description;
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "wgns";
  };
}
