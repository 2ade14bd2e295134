//! Lists every audio device Tutti can use: `cargo run -p tutti-audio --example devices`.
#![forbid(unsafe_code)]

fn main() {
    for d in tutti_audio::backend::list_devices() {
        let dir = match (d.input, d.output) {
            (true, true) => "in/out",
            (true, false) => "in",
            _ => "out",
        };
        let def = if d.default { " (default)" } else { "" };
        println!("{:<6} {:<7} {}{}  — {}", d.host, dir, d.name, def, d.description);
    }
}
