# The flake's outputs, evaluated offline against a stand-in for nixpkgs that has only what the
# outputs' *shape* needs (lib.genAttrs; every package a placeholder): which attributes exist
# for which systems. Building them needs the real nixpkgs (`nix flake check`).
let
  flake = import ../../flake.nix;
  placeholder = name: { type = "derivation"; inherit name; outPath = "/placeholder/${name}"; };
  stub = {
    lib.genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    legacyPackages = builtins.listToAttrs (map (s: { name = s; value = { system = s; }; })
      [ "x86_64-linux" "aarch64-linux" ]);
  };
  outputs = flake.outputs { self = outputs; nixpkgs = stub; };
  names = builtins.attrNames;
in {
  top = names outputs;
  packages = builtins.mapAttrs (_: names) outputs.packages;
  checks = builtins.mapAttrs (_: names) outputs.checks;
  devShells = builtins.mapAttrs (_: names) outputs.devShells;
  apps = builtins.mapAttrs (_: names) outputs.apps;
  nixosModules = names outputs.nixosModules;
  description = flake.description;
}
