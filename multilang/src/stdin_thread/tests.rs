use super::*;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tests that open writers take this: the enlarged pipes' budget is the process's.
static BUDGET_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn budget_lock() -> std::sync::MutexGuard<'static, ()> {
    BUDGET_USERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pipe whose read end a thread drains, counting the bytes as they come; joins to them all.
fn drained_pipe() -> (OwnedFd, Arc<AtomicUsize>, std::thread::JoinHandle<Vec<u8>>) {
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    counter.fetch_add(n, Ordering::SeqCst);
                }
            }
        }
    });
    (OwnedFd::from(writer), received, drain)
}

fn line(len: usize, seed: u8) -> Vec<u8> {
    let mut l: Vec<u8> = (0..len - 1)
        .map(|i| b'a' + ((i as u8).wrapping_add(seed) % 26))
        .collect();
    l.push(b'\n');
    l
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn lines_arrive_whole_and_in_order_and_closing_ends_the_input() {
    let _budget = budget_lock();
    let (fd, _, drain) = drained_pipe();
    let lines = [line(3 << 20, 1), line(120, 2), line(5 << 20, 3), line(2, 4)];
    current_thread().block_on(async {
        let mut input = ThreadedStdin::from_fd(fd).expect("writer thread");
        for l in &lines {
            input.write_line(l.clone()).await.expect("written");
        }
        input.close().await.expect("closed");
    });
    // The drain ends only at EOF, so this also shows that closing closed the pipe.
    assert_eq!(drain.join().expect("drain"), lines.concat());
}

/// Spawns `input.write_line(line)` on a current-thread runtime, lets it start, then holds the
/// runtime's only thread (as a long poll does: decoding a large GetRecords response) for at most
/// `hold` or until the reader has everything; returns what the reader had by then.
fn received_while_the_runtime_is_held<W: ChildInput + 'static>(
    make: impl FnOnce() -> W,
    len: usize,
    received: &AtomicUsize,
    hold: Duration,
) -> usize {
    let runtime = current_thread();
    runtime.block_on(async {
        let mut input = make();
        let write = tokio::spawn(async move { input.write_line(line(len, 7)).await });
        // Let the write start (and fill the pipe, for a writer the runtime polls).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let held = Instant::now();
        while received.load(Ordering::SeqCst) < len && held.elapsed() < hold {
            std::thread::sleep(Duration::from_millis(1));
        }
        let by_then = received.load(Ordering::SeqCst);
        write.await.expect("task").expect("written");
        by_then
    })
}

#[test]
fn a_line_reaches_the_child_while_the_runtime_is_busy() {
    let _budget = budget_lock();
    const LEN: usize = 16 << 20;
    let (fd, received, drain) = drained_pipe();
    let got = received_while_the_runtime_is_held(
        || ThreadedStdin::from_fd(fd).expect("writer thread"),
        LEN,
        &received,
        Duration::from_secs(20),
    );
    assert_eq!(
        got, LEN,
        "the whole line arrived while the runtime was held"
    );
    drop(drain);

    // The same line written by the runtime (tokio's own pipe writer, as before this module)
    // stops at the pipe's capacity until the runtime polls the write again.
    let (fd, received, drain) = drained_pipe();
    let got = received_while_the_runtime_is_held(
        || tokio::net::unix::pipe::Sender::from_owned_fd(fd).expect("a pipe the runtime polls"),
        LEN,
        &received,
        Duration::from_millis(300),
    );
    assert!(
        got <= 1 << 20,
        "a writer the runtime polls sent {got} bytes while the runtime was held"
    );
    drop(drain);
}

#[test]
fn a_write_to_a_child_that_is_gone_fails_and_so_do_later_ones() {
    let _budget = budget_lock();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    current_thread().block_on(async {
        let mut input = ThreadedStdin::from_fd(OwnedFd::from(writer)).expect("writer thread");
        let first = input.write_line(line(100, 0)).await.unwrap_err();
        assert_eq!(first.kind(), io::ErrorKind::BrokenPipe, "{first}");
        let later = input.write_line(line(100, 0)).await.unwrap_err();
        assert_eq!(later.kind(), io::ErrorKind::BrokenPipe, "{later}");
        input.close().await.expect("closing twice is harmless");
        let after_close = input.write_line(line(10, 0)).await.unwrap_err();
        assert_eq!(after_close.kind(), io::ErrorKind::BrokenPipe);
    });
}

#[cfg(target_os = "linux")]
fn capacity(fd: &OwnedFd) -> usize {
    // SAFETY: reads the pipe's capacity of a descriptor the caller holds.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) as usize }
}

#[cfg(target_os = "linux")]
#[test]
fn pipes_are_enlarged_within_the_budget_and_give_it_back() {
    let _budget = budget_lock();
    assert_eq!(pipe_capacity::in_use(), 0);
    let fits = pipe_capacity::BUDGET / PIPE_CAPACITY;
    let pipes: Vec<OwnedFd> = (0..fits + 4)
        .map(|_| OwnedFd::from(std::io::pipe().expect("pipe").1))
        .collect();
    let default = capacity(&pipes[0]);
    let shares: Vec<_> = pipes.iter().map(pipe_capacity::enlarge).collect();
    let enlarged = shares.iter().filter(|s| s.is_some()).count();
    // Where the system refuses (a lower fs.pipe-max-size), nothing is enlarged and nothing
    // of the budget is kept.
    if enlarged > 0 {
        assert_eq!(enlarged, fits, "the budget holds {fits} pipes");
        for (fd, share) in pipes.iter().zip(&shares) {
            let expected = if share.is_some() {
                PIPE_CAPACITY
            } else {
                default
            };
            assert_eq!(capacity(fd), expected);
        }
    }
    assert_eq!(pipe_capacity::in_use(), enlarged * PIPE_CAPACITY);
    drop(shares);
    assert_eq!(pipe_capacity::in_use(), 0, "every share went back");

    // A writer's share goes back once its thread has closed the pipe.
    let (fd, _, drain) = drained_pipe();
    current_thread().block_on(async {
        let mut input = ThreadedStdin::from_fd(fd).expect("writer thread");
        if enlarged > 0 {
            assert_eq!(pipe_capacity::in_use(), PIPE_CAPACITY);
        }
        input.close().await.expect("closed");
    });
    drain.join().expect("drain ends at EOF");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pipe_capacity::in_use() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pipe_capacity::in_use(), 0);
}
