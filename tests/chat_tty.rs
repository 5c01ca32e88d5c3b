//! The interactive chat in a real terminal (tmux): it streams, Ctrl-C stops the answer but not
//! the session, and the conversation carries on.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Neuron, TempDir, Tmux};

#[test]
fn interactive_chat_streams_stops_on_ctrl_c_and_keeps_the_conversation() {
    // The real default model: its answers are printable text that visibly grows on screen.
    let empty = TempDir::new("tty");
    let model = common::real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let n = Neuron::start(empty.path(), &["--model", model.to_str().unwrap()]);
    let bin = common::cortex_bin();
    let cmd = format!("{} chat helexa/small --endpoint {} --temperature 0 --max-tokens 1500", bin.display(), n.http);
    let t = Tmux::start(&format!("cortex-tty-{}", std::process::id()), &cmd);
    let s = t.wait_for(|s| s.contains(">>> "), Duration::from_secs(30));
    assert!(s.contains("Chatting with helexa/small"), "{s}");

    // A long answer: it streams (the screen grows), then Ctrl-C stops it, not the session.
    t.keys(&["Write a very long story about a dragon and a knight.", "Enter"]);
    assert!(n.eventually(Duration::from_secs(30), || n.metric("cortex_in_flight_requests", &[]) == 1.0));
    let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).count();
    // The answer has begun once the screen holds some of it (the pane's blank rows count as
    // lines, so wait on visible characters, not lines).
    let asked = visible(&t.screen());
    let first = visible(&t.wait_for(|s| visible(s) > asked + 40, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(800));
    let later = t.screen();
    assert!(visible(&later) > first, "the answer is not streaming:\n{later}");
    t.keys(&["C-c"]);
    let s = t.wait_for(|s| s.contains("(stopped)"), Duration::from_secs(10));
    assert!(s.contains("(stopped)"), "{s}");
    assert!(n.eventually(Duration::from_secs(10), || n.metric("cortex_generations_cancelled_total", &[]) == 1.0));

    // The next question carries the conversation, the stopped answer included.
    t.keys(&["Tell me more.", "Enter"]);
    assert!(n.eventually(Duration::from_secs(30), || prompt_sizes(&n).len() == 2));
    t.keys(&["C-c"]);
    t.wait_for(|s| s.matches("(stopped)").count() == 2, Duration::from_secs(10));
    // After /reset only the new question is sent.
    t.keys(&["/reset", "Enter"]);
    t.wait_for(|s| s.contains("(conversation cleared)"), Duration::from_secs(5));
    t.keys(&["Tell me more.", "Enter"]);
    assert!(n.eventually(Duration::from_secs(30), || prompt_sizes(&n).len() == 3));
    t.keys(&["C-c"]);
    let sizes = prompt_sizes(&n);
    assert!(sizes[1] > sizes[0] + 5, "the second prompt does not hold the first exchange: {sizes:?}");
    assert!(sizes[2] < sizes[1], "/reset did not clear the conversation: {sizes:?}");
    t.keys(&["/exit", "Enter"]);
    let ended = || {
        let alive = Command::new("tmux").args(["has-session", "-t", &t.0]).stderr(std::process::Stdio::null()).status();
        !alive.map(|s| s.success()).unwrap_or(false)
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !ended() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ended(), "/exit did not end the session");
}

/// Prompt sizes of the requests the neuron accepted, in order (from its log).
fn prompt_sizes(n: &Neuron) -> Vec<usize> {
    n.log()
        .lines()
        .filter(|l| l.contains(" generating "))
        .filter_map(|l| l.split("prompt_tokens=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}
