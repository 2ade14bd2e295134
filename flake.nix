{
  description = "Tutti: audio over a local network, in time (sync playback and live voices)";

  # One input: a NixOS release whose Rust (1.88 or newer) builds this workspace.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.1.0";

      # The workspace, without what a build never reads (Git metadata, build output).
      src = pkgs: pkgs.lib.cleanSourceWith {
        src = ./.;
        filter = path: type:
          let base = baseNameOf path;
          in !(base == "target" || base == "node_modules" || base == ".git" || base == "result");
      };

      tutti = pkgs: pkgs.rustPlatform.buildRustPackage {
        pname = "tutti";
        inherit version;
        src = src pkgs;
        # Every dependency is pinned by Cargo.lock (crates.io only; cpal, pulseaudio and
        # rumqttd are vendored path crates in ./vendor).
        cargoLock.lockFile = ./Cargo.lock;
        cargoBuildFlags = [ "-p" "tutti" ];
        # cpal's ALSA host links libasound; the opus crate builds libopus with cmake.
        nativeBuildInputs = [ pkgs.pkg-config pkgs.cmake ];
        buildInputs = [ pkgs.alsa-lib ];
        # The tests need a sound server, network namespaces and a browser: `checks` runs the
        # ones that need none of them.
        doCheck = false;
        meta = {
          description = "Plays audio over a local network in time";
          license = with pkgs.lib.licenses; [ mit asl20 ];
          mainProgram = "tutti";
          platforms = pkgs.lib.platforms.linux;
        };
      };

      # The desktop app (dioxus desktop: WebKitGTK in a GTK window).
      tutti-gui = pkgs: pkgs.rustPlatform.buildRustPackage {
        pname = "tutti-gui";
        inherit version;
        src = src pkgs;
        cargoLock.lockFile = ./Cargo.lock;
        cargoBuildFlags = [ "-p" "tutti-gui" ];
        nativeBuildInputs = [ pkgs.pkg-config pkgs.cmake pkgs.wrapGAppsHook3 ];
        buildInputs = [
          pkgs.alsa-lib pkgs.gtk3 pkgs.webkitgtk_4_1 pkgs.libsoup_3 pkgs.xdotool pkgs.openssl
          pkgs.libayatana-appindicator
        ];
        doCheck = false;
        meta.mainProgram = "tutti-gui";
      };
    in
    {
      packages = forAll (pkgs: {
        default = tutti pkgs;
        tutti = tutti pkgs;
        tutti-gui = tutti-gui pkgs;
      });

      apps = forAll (pkgs: {
        default = { type = "app"; program = "${tutti pkgs}/bin/tutti"; };
      });

      # The deterministic tests (sync core, calibration, simulator), which need no sound
      # server, network or browser. The README's test command runs them all.
      checks = forAll (pkgs: {
        tests = (tutti pkgs).overrideAttrs (old: {
          pname = "tutti-tests";
          doCheck = true;
          cargoTestFlags = [ "-p" "tutti-proto" "-p" "tutti-calib" "-p" "tutti-sim" ];
        });
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ (tutti-gui pkgs) ];
          packages = [
            pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.rust-analyzer
            # the tests: a private PulseAudio, decoders' fixtures, a broker, the browser tests,
            # the desktop app's window test
            pkgs.pulseaudio pkgs.sox pkgs.bc pkgs.mosquitto pkgs.chromium pkgs.nodejs
            pkgs.xvfb-run pkgs.xorg.xwininfo pkgs.imagemagick pkgs.xdotool pkgs.iproute2
          ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });

      # NixOS: services.tutti.{hub,players.<name>,sources.<name>}, the same units the Debian
      # package ships (user `tutti`, group `audio`, state in /var/lib/tutti).
      nixosModules.default = { config, lib, pkgs, ... }:
        let
          cfg = config.services.tutti;
          toml = pkgs.formats.toml { };
          package = cfg.package;
          hardening = {
            User = "tutti";
            Group = "tutti";
            Restart = "on-failure";
            RestartSec = 2;
            StateDirectory = "tutti";
            StateDirectoryMode = "0750";
            NoNewPrivileges = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            PrivateTmp = true;
            ProtectKernelTunables = true;
            ProtectControlGroups = true;
            RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
          };
          instance = kind: {
            options = {
              settings = lib.mkOption {
                type = toml.type;
                default = { };
                description = "The TOML config file's sections ([network], [${kind}]); keys are the long flags with _ for -.";
              };
              extraArgs = lib.mkOption {
                type = lib.types.listOf lib.types.str;
                default = [ ];
                description = "More flags.";
              };
            };
          };
          unit = kind: command: name: inst: lib.nameValuePair "tutti-${kind}-${name}" {
            description = "Tutti ${kind} ${name}";
            wantedBy = [ "multi-user.target" ];
            after = [ "network-online.target" "sound.target" ];
            wants = [ "network-online.target" ];
            environment = {
              TUTTI_CONFIG = toml.generate "tutti-${kind}-${name}.toml" inst.settings;
              TUTTI_PAIRING = "/var/lib/tutti/pairing.json";
            };
            serviceConfig = hardening // {
              SupplementaryGroups = [ "audio" ];
              ExecStart = lib.escapeShellArgs ([ (lib.getExe package) ] ++ command ++ inst.extraArgs);
            };
          };
        in
        {
          options.services.tutti = {
            package = lib.mkOption {
              type = lib.types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.tutti;
              description = "The tutti package.";
            };
            hub = {
              enable = lib.mkEnableOption "the Tutti hub (API, web app, node link)";
              settings = lib.mkOption {
                type = toml.type;
                default = { };
                description = "The hub's TOML config ([network]).";
              };
              extraArgs = lib.mkOption {
                type = lib.types.listOf lib.types.str;
                default = [ ];
                example = [ "--link" "0.0.0.0:7481" ];
                description = "More `tutti serve` flags.";
              };
              openFirewall = lib.mkOption {
                type = lib.types.bool;
                default = false;
                description = "Open the node link (7481/tcp), HTTPS (7443/tcp), MQTT (1883/tcp) and mDNS (5353/udp).";
              };
            };
            players = lib.mkOption {
              type = lib.types.attrsOf (lib.types.submodule (instance "play"));
              default = { };
              example = { living.settings.play = { source = "192.168.1.10:7400"; host = "alsa"; }; };
              description = "Players, by name: one service each (tutti-play-NAME).";
            };
            sources = lib.mkOption {
              type = lib.types.attrsOf (lib.types.submodule (instance "stream"));
              default = { };
              example = { tv.settings.stream = { device = "hw:1"; }; };
              description = "Sources, by name: one service each (tutti-stream-NAME).";
            };
          };

          config = lib.mkIf (cfg.hub.enable || cfg.players != { } || cfg.sources != { }) {
            users.users.tutti = {
              isSystemUser = true;
              group = "tutti";
              extraGroups = [ "audio" ];
              home = "/var/lib/tutti";
            };
            users.groups.tutti = { };
            environment.systemPackages = [ package ];
            systemd.services = lib.mkMerge [
              (lib.mkIf cfg.hub.enable {
                tutti-hub = {
                  description = "Tutti hub";
                  wantedBy = [ "multi-user.target" ];
                  after = [ "network-online.target" ];
                  wants = [ "network-online.target" ];
                  environment.TUTTI_CONFIG = toml.generate "tutti-hub.toml" cfg.hub.settings;
                  serviceConfig = hardening // {
                    ExecStart = lib.escapeShellArgs ([ (lib.getExe package) "serve" "--state" "/var/lib/tutti/hub.json" ] ++ cfg.hub.extraArgs);
                  };
                };
              })
              (lib.mapAttrs' (name: unit "play" [ "play" "--name" name ] name) cfg.players)
              (lib.mapAttrs' (unit "stream" [ "stream" "--quiet" ]) cfg.sources)
            ];
            networking.firewall = lib.mkIf cfg.hub.openFirewall {
              allowedTCPPorts = [ 7443 7481 1883 ];
              allowedUDPPorts = [ 5353 ];
            };
          };
        };
    };
}
