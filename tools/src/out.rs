//! Writing data on stdout. A reader that goes away (`jitgate ... | head -1`) ends the command quietly with exit 0,
//! never with a panic: the rest of the output is not wanted.

use std::io::Write as _;

/// Writes `args` and a newline on stdout (see [`outln!`]).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| o.write_all(b"\n"))
        .and_then(|()| o.flush());
    settle(r);
}

/// Writes `args` on stdout (see [`out!`]).
pub fn text(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let r = o.write_fmt(args).and_then(|()| o.flush());
    settle(r);
}

fn settle(r: std::io::Result<()>) {
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(i32::from(crate::exit::USAGE));
        }
    }
}

/// The backstop for output written with `println!` (by a library, or code not yet moved to [`outln!`]): its panic on
/// a closed stdout ends the process quietly instead of with exit 101 and a message.
pub fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
