//! The Rust SDK's worker loop (`deputy_sdk::agent::serve`), run as Deputy runs it: the trivial agent as a child
//! process speaking JSON lines, its stdin a pipe (read through the event loop) or a file (read the other way).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn request_line(id: &str, user: &str) -> String {
    let request = json!({
        "id": id,
        "stream": false,
        "payload": { "messages": [{ "role": "user", "content": "hi" }] },
        "user_token": "a-token",
        "user_id": user,
    });
    format!("{request}\n")
}

fn answers(stdout: impl std::io::Read) -> Vec<Value> {
    BufReader::new(stdout)
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect()
}

fn assert_answered(answers: &[Value], requests: &[(&str, &str)]) {
    assert_eq!(answers[0]["type"], "ready", "{answers:?}");
    assert_eq!(answers.len(), requests.len() + 1, "{answers:?}");
    for ((id, user), answer) in requests.iter().zip(&answers[1..]) {
        assert_eq!(answer["id"], *id);
        assert_eq!(answer["type"], "result", "{answer}");
        assert_eq!(
            answer["data"]["messages"][0]["content"],
            format!("ok {user}")
        );
    }
}

#[test]
fn a_rust_agent_answers_each_request_on_a_pipe_in_order() {
    let mut agent = Command::new(env!("CARGO_BIN_EXE_trivial-agent"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let requests = [("r1", "ann"), ("r2", "bob"), ("r3", "cy")];
    let mut stdin = agent.stdin.take().unwrap();
    for (id, user) in requests {
        stdin.write_all(request_line(id, user).as_bytes()).unwrap();
    }
    stdin.write_all(b"not json\n").unwrap();
    drop(stdin);
    let answers = answers(agent.stdout.take().unwrap());
    assert!(agent.wait().unwrap().success());
    assert_answered(&answers[..answers.len() - 1], &requests);
    let refused = &answers[answers.len() - 1];
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error_code"], "BAD_REQUEST");
}

#[test]
fn a_rust_agent_reads_requests_from_a_file_too() {
    let mut file = tempfile::tempfile().unwrap();
    let requests = [("f1", "dee"), ("f2", "eve")];
    for (id, user) in requests {
        file.write_all(request_line(id, user).as_bytes()).unwrap();
    }
    std::io::Seek::rewind(&mut file).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_trivial-agent"))
        .stdin(file)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_answered(&answers(&output.stdout[..]), &requests);
}
