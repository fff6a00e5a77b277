# nix/package.nix called with stand-ins for nixpkgs (no nixpkgs here, only its lib): every
# argument it asks for is a fake package named after it, and buildPythonApplication returns its
# attributes, so that the test can compare them with pyproject.toml.
#   nix-instantiate --eval --strict --json package.nix --argstr libPath .../lib \
#     [--argstr files '[{"path": "wgns/cli.py", "type": "regular"}, ...]']
# (FILES: the repository's, relative to it; `source` says which of them the package's src keeps)
{
  libPath,
  files ? "[]",
}:
let
  lib = import libPath;
  fake = name: {
    type = "derivation";
    pname = name;
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  python3Packages = {
    buildPythonApplication = attrs: attrs;
    setuptools = fake "setuptools";
    python = fake "python3" // {
      interpreter = "/nix/store/00000000000000000000000000000000-python3/bin/python3";
    };
  };
  package = import ../../../nix/package.nix;
  args = lib.mapAttrs (name: _: fake name) (builtins.functionArgs package) // {
    inherit lib python3Packages;
  };
  attrs = package args;
in
{
  inherit (attrs)
    pname
    version
    pyproject
    makeWrapperArgs
    postInstall
    ;
  build-system = map (p: p.pname) attrs.build-system;
  dependencies = map (p: p.pname) attrs.dependencies;
  mainProgram = attrs.meta.mainProgram;
  source = map (f: f.path) (
    lib.filter (f: attrs.src.filter "${toString ../../..}/${f.path}" f.type) (builtins.fromJSON files)
  );
  sourcePath = toString attrs.src;
  # the packages whose bin/ is on wgns's PATH
  runtime = lib.filter (n: lib.hasInfix "-${n}/bin" (toString attrs.makeWrapperArgs)) (
    builtins.attrNames (builtins.functionArgs package)
  );
}
