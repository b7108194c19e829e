//! A minimal forward proxy for the egress-proxy tests.
#![allow(dead_code)]

/// A minimal forward proxy: CONNECT tunnels and absolute-form requests, each piped to
/// its target; records the first line of every connection.
pub async fn start() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let first = text.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(first.clone());
                let mut parts = first.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let authority = if method == "CONNECT" {
                    target.to_string()
                } else {
                    target
                        .trim_start_matches("http://")
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .to_string()
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&authority).await else {
                    return;
                };
                if method == "CONNECT" {
                    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                } else {
                    let _ = upstream.write_all(&head).await;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, seen)
}
