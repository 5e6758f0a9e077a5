//! The prediction service through the binary, on 127.0.0.1 with a port the system picks:
//! the owner's round trip (`cryptonets client run`), tokens that isolate owners, bad
//! requests answered with a 4xx and a JSON reason, a service killed mid-job that finishes it
//! after a restart, and the OpenAPI document in step with the routes.
#![cfg(feature = "service")]

#[path = "support/cli.rs"]
mod support;
use support::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryptonets_core::Backend;
use cryptonets_core::bfv::{Ciphertext, SecretKey};
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{
    PlannedSingle, SingleKeys, decode_single_outputs, encode_single_input,
};
use cryptonets_host::bundle::{Bundle, RESULTS, UPLOADS};
use cryptonets_host::service::client::ServiceClient;
use cryptonets_host::service::server::{JobMode, ROUTES, Registered};
use cryptonets_host::service::store::JobStatus;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A `cryptonets serve` child process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(state: &Path, models: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cryptonets"))
            .current_dir(workspace())
            .args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .arg("--models")
            .arg(models)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cryptonets serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        Self { child, url }
    }
}

impl Server {
    /// Kills the process at once (SIGKILL): nothing is flushed, nothing finishes.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A models directory with the CryptoNets model only (quick to load).
fn models_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        workspace().join("models/cryptonets-mnist.cnmd"),
        dir.join("cryptonets-mnist.cnmd"),
    )
    .unwrap();
    dir
}

/// An owner: its plan, secret key and evaluation keys.
struct Owner {
    network: PolynomialNetwork,
    planned: PlannedSingle,
    secret: SecretKey,
    keys: Vec<u8>,
    rng: ChaCha20Rng,
}

impl Owner {
    fn new(seed: u64) -> Self {
        let bytes = std::fs::read(workspace().join("models/cryptonets-mnist.cnmd")).unwrap();
        let network = PolynomialNetwork::parse(&bytes).unwrap();
        let planned = PlannedSingle::new(&network, Backend::detect()).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let secret = SecretKey::generate(&planned.params.channels()[0], &mut rng);
        let keys = SingleKeys::generate(&planned.params, &planned.plan, &secret, &mut rng)
            .unwrap()
            .to_bytes(&planned.params);
        Self {
            network,
            planned,
            secret,
            keys,
            rng,
        }
    }

    /// Registers its keys for single-image jobs of the CryptoNets model.
    fn register(&self, client: &ServiceClient) -> Registered {
        client
            .register_keys("cryptonets-mnist", JobMode::Single, &self.keys)
            .unwrap()
    }

    fn image(k: usize) -> Vec<u8> {
        (0..784).map(|i| ((i * 31 + k * 97) % 256) as u8).collect()
    }

    fn upload(&mut self, images: &[Vec<u8>]) -> Vec<u8> {
        let (params, plan) = (&self.planned.params, &self.planned.plan);
        let objects = images
            .iter()
            .map(|image| {
                params
                    .channels()
                    .iter()
                    .map(|p| {
                        let m = encode_single_input(p, plan, &self.network, image).unwrap();
                        let seeded = self.secret.encrypt_seeded(p, &m, &mut self.rng).unwrap();
                        let seeded = match plan.compressed_input {
                            true => seeded.compress(p).unwrap(),
                            false => seeded,
                        };
                        vec![seeded.to_bytes(p)]
                    })
                    .collect()
            })
            .collect();
        Bundle {
            kind: UPLOADS,
            id: [3; 16],
            objects,
        }
        .to_bytes()
    }

    /// Checks a result bundle against plaintext inference of `images`.
    fn check(&self, result: &[u8], images: &[Vec<u8>]) {
        let (params, plan) = (&self.planned.params, &self.planned.plan);
        let parts = plan.layout.output().len();
        let max = params.channels()[0].max_ciphertext_bytes();
        let bundle =
            Bundle::from_bytes(result, RESULTS, params.channels().len(), parts, max).unwrap();
        assert_eq!(bundle.objects.len(), images.len());
        for (image, objects) in images.iter().zip(&bundle.objects) {
            let outputs: Vec<Vec<Ciphertext>> = objects
                .iter()
                .zip(params.channels())
                .map(|(o, p)| {
                    o.iter()
                        .map(|b| Ciphertext::from_bytes(p, b).unwrap())
                        .collect()
                })
                .collect();
            let (logits, _) = decode_single_outputs(params, &self.secret, plan, &outputs).unwrap();
            assert_eq!(logits, self.network.logits_wide(image).unwrap());
        }
    }
}

#[test]
fn client_run_is_exact_through_the_service() {
    let Some(dir) = data() else { return };
    let tmp = tempdir("service-run");
    let server = Server::start(&tmp.join("state"), &models_dir(&tmp), &[]);
    let out = cryptonets(&[
        "client",
        "run",
        "--server",
        &server.url,
        "--images",
        "3",
        "--data",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["agreement"], 1.0);
    assert_eq!(report["exact_logits"], 1.0);
    assert_eq!(report["images"], 3);
    assert_eq!(report["accuracy"], report["plaintext_accuracy"]);
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn tokens_isolate_owners_and_bad_requests_get_a_4xx_with_a_reason() {
    let tmp = tempdir("service-api");
    let server = Server::start(&tmp.join("state"), &models_dir(&tmp), &[]);
    let client = ServiceClient::new(&server.url);
    let expect = |(status, body): (u16, Vec<u8>), want: u16, says: &str| {
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, want, "{body}");
        if status >= 400 {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            let error = json["error"].as_str().unwrap();
            assert!(error.contains(says), "{error}");
        }
    };
    expect(client.raw("GET", "/healthz", None, &[]).unwrap(), 200, "");
    expect(
        client.raw("GET", "/nowhere", None, &[]).unwrap(),
        404,
        "no such route",
    );
    let models = client.models().unwrap();
    assert_eq!(models[0]["name"], "cryptonets-mnist");

    let mut alice = Owner::new(1);
    let mut bob = Owner::new(2);
    // A secret key is refused with the reason; so are garbage, and an unknown model.
    let p = &alice.planned.params.channels()[0];
    let secret = alice.secret.to_bytes(p);
    let keys_path = "/v1/keys?model=cryptonets-mnist";
    expect(
        client.raw("POST", keys_path, None, &secret).unwrap(),
        400,
        "secret key",
    );
    expect(
        client.raw("POST", keys_path, None, b"not keys").unwrap(),
        400,
        "evaluation keys",
    );
    expect(
        client
            .raw("POST", "/v1/keys?model=nope", None, &alice.keys)
            .unwrap(),
        404,
        "no model",
    );
    let a = client
        .register_keys("cryptonets-mnist", JobMode::Single, &alice.keys)
        .unwrap();
    let b = client
        .register_keys("cryptonets-mnist", JobMode::Single, &bob.keys)
        .unwrap();
    expect(
        client.raw("POST", keys_path, None, &alice.keys).unwrap(),
        409,
        "registered",
    );

    // Jobs: no token, a wrong token, another owner's token, garbage, too much.
    let images: Vec<Vec<u8>> = (0..2).map(Owner::image).collect();
    let upload = alice.upload(&images);
    let jobs = format!("/v1/jobs?key_id={}", a.key_id);
    // (Refused before the body is read: small bodies, which the client finishes sending.)
    expect(
        client.raw("POST", &jobs, None, b"x").unwrap(),
        401,
        "Bearer",
    );
    expect(
        client.raw("POST", &jobs, Some("00"), b"x").unwrap(),
        404,
        "no such keys",
    );
    expect(
        client.raw("POST", &jobs, Some(&b.token), b"x").unwrap(),
        404,
        "no such keys",
    );
    expect(
        client.raw("POST", &jobs, Some(&a.token), b"junk").unwrap(),
        400,
        "bundle",
    );
    // More images than a job holds, said by the header: 413, as soon as the header is in
    // (the whole body: the connection is closed before the client is done sending it).
    let mut many = upload.clone();
    many[24..28].copy_from_slice(&300u32.to_le_bytes());
    expect(
        client
            .raw("POST", &jobs, Some(&a.token), &many[..40])
            .unwrap(),
        413,
        "at most",
    );
    assert!(matches!(
        client.raw("POST", &jobs, Some(&a.token), &many),
        Err(_) | Ok((413, _))
    ));
    // More bytes than a job can hold: 413, or the connection closed before the client is
    // done sending them.
    // (A valid header, so that the size is what is refused.)
    let mut huge = vec![0u8; 200 << 20];
    huge[..64].copy_from_slice(&upload[..64]);
    if let Ok(answer) = client.raw("POST", &jobs, Some(&a.token), &huge) {
        expect(answer, 413, "at most");
    }
    expect(
        client
            .raw("POST", "/v1/jobs?key_id=../../etc", Some(&a.token), b"x")
            .unwrap(),
        400,
        "32 hex digits",
    );
    let job = client.submit(&a.key_id, &a.token, &upload).unwrap();
    let status = format!("/v1/jobs/{}", job.job_id);
    expect(
        client.raw("GET", &status, Some(&b.token), &[]).unwrap(),
        404,
        "no such job",
    );
    expect(
        client
            .raw("GET", "/v1/jobs/zz", Some(&a.token), &[])
            .unwrap(),
        400,
        "32 hex",
    );
    let result = client.wait(&job.job_id, &a.token, |_| {}).unwrap();
    alice.check(&result, &images);
    let fetch = format!("/v1/jobs/{}/result", job.job_id);
    expect(
        client.raw("GET", &fetch, Some(&b.token), &[]).unwrap(),
        404,
        "no such job",
    );
    expect(
        client.raw("DELETE", &status, Some(&b.token), &[]).unwrap(),
        404,
        "no such job",
    );
    client.delete_job(&job.job_id, &a.token).unwrap();
    expect(
        client.raw("GET", &status, Some(&a.token), &[]).unwrap(),
        404,
        "no such job",
    );

    // Bob's own job still works; deleting his keys ends his access.
    let upload = bob.upload(&images[..1]);
    let job = client.submit(&b.key_id, &b.token, &upload).unwrap();
    let result = client.wait(&job.job_id, &b.token, |_| {}).unwrap();
    bob.check(&result, &images[..1]);
    client.delete_keys(&b.key_id, &b.token).unwrap();
    expect(
        client
            .raw(
                "POST",
                &format!("/v1/jobs?key_id={}", b.key_id),
                Some(&b.token),
                b"x",
            )
            .unwrap(),
        404,
        "no such keys",
    );
    let (status, metrics) = client.raw("GET", "/metrics", None, &[]).unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("cryptonets_images_total 3"), "{metrics}");
    assert!(
        metrics.contains("cryptonets_jobs_total{status=\"done\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("cryptonets_queue_depth 0"), "{metrics}");
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Eight owners, each with its own keys (seeds `seed`, `seed` + 1, ...), send one image at
/// once and check their answers.
fn eight_single_image_owners_at_once(url: &str, seed: u64) {
    let owners: Vec<_> = (0..8u64)
        .map(|k| {
            let url = url.to_string();
            std::thread::spawn(move || {
                let mut owner = Owner::new(seed + k);
                let client = ServiceClient::new(&url);
                let keys = owner.register(&client);
                let images = vec![Owner::image(k as usize)];
                let upload = owner.upload(&images);
                let job = client.submit(&keys.key_id, &keys.token, &upload).unwrap();
                let result = client.wait(&job.job_id, &keys.token, |_| {}).unwrap();
                owner.check(&result, &images);
            })
        })
        .collect();
    for owner in owners {
        owner.join().expect("an owner's round trip");
    }
}

#[test]
fn eight_owners_at_once_each_get_their_own_exact_answer() {
    let tmp = tempdir("service-owners");
    let server = Server::start(&tmp.join("state"), &models_dir(&tmp), &["--workers", "2"]);
    let url = server.url.clone();
    eight_single_image_owners_at_once(&url, 10);
    // The load test, bounded, on loopback only.
    let out = cryptonets(&[
        "client",
        "load",
        "--server",
        &url,
        "--owners",
        "2",
        "--requests",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["requests"].clone(), report["exact"].clone()),
        (4.into(), 4.into())
    );
    assert!(report["p99_seconds"].as_f64().unwrap() >= report["p50_seconds"].as_f64().unwrap());
    let out = cryptonets(&[
        "client",
        "load",
        "--server",
        "http://192.0.2.1:80",
        "--requests",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("only runs against a service on this machine"),
        "{}",
        text(&out)
    );
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// What the crash tests share: a state directory and the models in a fresh temporary
/// directory, an owner and its upload of `count` images.
struct CrashFixture {
    tmp: PathBuf,
    state: PathBuf,
    models: PathBuf,
    owner: Owner,
    images: Vec<Vec<u8>>,
    upload: Vec<u8>,
}

impl CrashFixture {
    fn new(name: &str, seed: u64, count: usize) -> Self {
        let tmp = tempdir(name);
        let (state, models) = (tmp.join("state"), models_dir(&tmp));
        let mut owner = Owner::new(seed);
        let images: Vec<Vec<u8>> = (0..count).map(Owner::image).collect();
        let upload = owner.upload(&images);
        Self {
            tmp,
            state,
            models,
            owner,
            images,
            upload,
        }
    }

    fn start(&self, args: &[&str]) -> Server {
        Server::start(&self.state, &self.models, args)
    }

    /// Registers the owner's keys, submits the upload and returns once the job runs.
    fn submit_and_wait_until_running(&self, client: &ServiceClient) -> (Registered, String) {
        let keys = self.owner.register(client);
        let job = client
            .submit(&keys.key_id, &keys.token, &self.upload)
            .unwrap();
        wait_until_running(client, &job.job_id, &keys.token);
        (keys, job.job_id)
    }

    /// The job done with every image, its result exact.
    fn check_done(&self, client: &ServiceClient, keys: &Registered, job: &str, result: &[u8]) {
        self.owner.check(result, &self.images);
        let record = client.job(job, &keys.token).unwrap();
        assert_eq!(
            (record.status, record.done_images),
            (JobStatus::Done, self.images.len())
        );
    }

    fn remove(self) {
        std::fs::remove_dir_all(&self.tmp).unwrap();
    }
}

#[test]
fn a_service_killed_mid_job_finishes_it_after_a_restart() {
    let fixture = CrashFixture::new("service-kill", 3, 6);
    let server = fixture.start(&["--workers", "1"]);
    let (keys, job) = fixture.submit_and_wait_until_running(&ServiceClient::new(&server.url));
    // Killed (SIGKILL) as soon as the job runs.
    server.kill();
    let server = fixture.start(&["--workers", "1"]);
    let client = ServiceClient::new(&server.url);
    let result = client.wait(&job, &keys.token, |_| {}).unwrap();
    fixture.check_done(&client, &keys, &job, &result);
    drop(server);
    fixture.remove();
}

#[test]
fn a_full_queue_answers_429_and_a_stalled_upload_408_in_json_logs() {
    let tmp = tempdir("service-limits");
    let (state, models) = (tmp.join("state"), models_dir(&tmp));
    let mut owner = Owner::new(6);
    let images: Vec<Vec<u8>> = (0..3).map(Owner::image).collect();
    let upload = owner.upload(&images);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryptonets"))
        .current_dir(workspace())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-queue",
            "1",
            "--workers",
            "1",
        ])
        .args(["--read-timeout", "1", "--log-json", "--state"])
        .arg(&state)
        .arg("--models")
        .arg(&models)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let client = ServiceClient::new(&url);
    let keys = owner.register(&client);
    let jobs = format!("/v1/jobs?key_id={}", keys.key_id);
    // One job runs, one waits; the next is refused until the queue drains.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, body) = client
            .raw("POST", &jobs, Some(&keys.token), &upload)
            .unwrap();
        if status == 429 {
            assert!(String::from_utf8_lossy(&body).contains("queue is full"));
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 202);
    assert!(statuses.contains(&429), "{statuses:?}");
    // Retry-After, seen by a client nobody here wrote (a job it gets in fills the queue
    // again for the next try).
    let curl_submit = || {
        let out = Command::new("curl")
            .args(["--silent", "--include", "-X", "POST", "--data-binary", "@-"])
            .args(["-H", &format!("Authorization: Bearer {}", keys.token)])
            .arg(format!("{url}{jobs}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut curl| {
                use std::io::Write;
                curl.stdin.take().unwrap().write_all(&upload)?;
                curl.wait_with_output()
            })
            .expect("curl is installed (scripts/test.sh installs it)");
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let refused = (0..3)
        .map(|_| curl_submit())
        .find(|head| head.contains(" 429 "))
        .expect("curl saw a 429");
    assert!(refused.contains("retry-after: 5"), "{refused}");
    // A body that stops arriving is cut off with 408 after --read-timeout.
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    use std::io::{Read, Write};
    // Wait for the queue to drain so that the stall, not the queue, is what is refused.
    let started = Instant::now();
    while client
        .raw("GET", "/metrics", None, &[])
        .map(|(_, m)| String::from_utf8_lossy(&m).contains("cryptonets_queue_depth 0"))
        != Ok(true)
    {
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    }
    write!(
        stream,
        "POST {jobs} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        keys.token
    )
    .unwrap();
    stream.write_all(&upload[..1000]).unwrap();
    let stalled = Instant::now();
    let mut answer = vec![0u8; 4096];
    let k = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..k]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");
    assert!(stalled.elapsed() < Duration::from_secs(20));
    // The logs are JSON lines with the job ids as fields.
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let accepted: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v: &serde_json::Value| v["fields"]["message"] == "accepted")
        .collect();
    assert!(accepted.len() >= 2, "{logs}");
    assert!(
        accepted
            .iter()
            .all(|v| v["fields"]["job"].as_str().is_some_and(|j| j.len() == 32))
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn sigterm_finishes_the_running_job_then_exits() {
    let fixture = CrashFixture::new("service-term", 5, 4);
    let mut server = fixture.start(&[]);
    let (keys, job) = fixture.submit_and_wait_until_running(&ServiceClient::new(&server.url));
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // The job finished before the exit: done at the next start, before any worker ran.
    let server = fixture.start(&[]);
    let client = ServiceClient::new(&server.url);
    let result = client.result(&job, &keys.token).unwrap();
    fixture.check_done(&client, &keys, &job, &result);
    drop(server);
    fixture.remove();
}

#[test]
fn the_openapi_document_describes_exactly_the_routes() {
    let text = std::fs::read_to_string(workspace().join("host/openapi.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .as_object()
                .unwrap()
                .keys()
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
}

/// Waits until `job` leaves the queue (a worker claimed it).
fn wait_until_running(client: &ServiceClient, job: &str, token: &str) {
    let started = Instant::now();
    while client.job(job, token).unwrap().status == JobStatus::Queued {
        assert!(started.elapsed() < Duration::from_secs(120), "never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_batch_owner_and_eight_single_image_owners_at_once_on_api_and_worker_processes() {
    let Some(dir) = data() else { return };
    let tmp = tempdir("service-roles");
    let (state, models) = (tmp.join("state"), models_dir(&tmp));
    // The front accepts jobs into the state directory; two worker processes take them.
    let api = Server::start(&state, &models, &["--role", "api"]);
    let workers: Vec<Server> = (0..2)
        .map(|_| Server::start(&state, &models, &["--role", "worker", "--workers", "1"]))
        .collect();
    let batch = {
        let (url, dir) = (api.url.clone(), dir.clone());
        std::thread::spawn(move || {
            cryptonets(&[
                "client",
                "run",
                "--server",
                &url,
                "--mode",
                "batch",
                "--images",
                "24",
                "--data",
                dir.to_str().unwrap(),
                "--json",
            ])
        })
    };
    eight_single_image_owners_at_once(&api.url, 100);
    let out = batch.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "batch");
    assert_eq!(report["jobs"], 1);
    assert_eq!(report["images"], 24);
    assert_eq!(report["exact_logits"], 1.0);
    assert_eq!(report["accuracy"], report["plaintext_accuracy"]);
    // The workers did the evaluations (the front evaluates nothing).
    let images_by = |url: &str| -> u64 {
        let (_, metrics) = ServiceClient::new(url)
            .raw("GET", "/metrics", None, &[])
            .unwrap();
        let metrics = String::from_utf8(metrics).unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("cryptonets_images_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(images_by(&api.url), 0);
    assert_eq!(
        workers.iter().map(|w| images_by(&w.url)).sum::<u64>(),
        24 + 8
    );
    // A worker has no API.
    let (status, _) = ServiceClient::new(&workers[0].url)
        .raw("GET", "/v1/models", None, &[])
        .unwrap();
    assert_eq!(status, 404);
    drop((api, workers));
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_another_finishes_it() {
    let fixture = CrashFixture::new("service-lease", 4, 6);
    let api = fixture.start(&["--role", "api"]);
    let worker = fixture.start(&["--role", "worker", "--lease", "2"]);
    let client = ServiceClient::new(&api.url);
    let (keys, job) = fixture.submit_and_wait_until_running(&client);
    worker.kill();
    // The dead worker's lease runs out; a new worker queues the job again and runs it.
    let _worker = fixture.start(&["--role", "worker", "--lease", "2"]);
    let result = client.wait(&job, &keys.token, |_| {}).unwrap();
    fixture.check_done(&client, &keys, &job, &result);
    drop(api);
    fixture.remove();
}

/// Runs curl (a client nobody here wrote) and returns its output; curl must be installed
/// (scripts/test.sh installs it).
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test.sh installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn https_with_rustls_and_http2_serve_a_real_client() {
    let Some(dir) = data() else { return };
    let tmp = tempdir("service-tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (tmp.join("cert.pem"), tmp.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        &tmp.join("state"),
        &models_dir(&tmp),
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let ca = cert_pem.to_str().unwrap();
    let out = cryptonets(&[
        "client",
        "run",
        "--server",
        &server.url,
        "--ca-cert",
        ca,
        "--images",
        "2",
        "--data",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exact_logits"], 1.0);
    // Without the CA the client refuses the certificate.
    let out = cryptonets(&["client", "run", "--server", &server.url, "--images", "1"]);
    assert!(!out.status.success());
    // HTTP/2 by ALPN over TLS, and HTTP/1.1.
    let models = format!("{}/v1/models", server.url);
    let head = curl(&[
        "--http2",
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &models,
    ]);
    assert_eq!(head, "2 200");
    let head = curl(&[
        "--http1.1",
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &models,
    ]);
    assert_eq!(head, "1.1 200");
    drop(server);
    // Cleartext HTTP/2 with prior knowledge.
    let server = Server::start(&tmp.join("state"), &models_dir(&tmp), &[]);
    let head = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &format!("{}/healthz", server.url),
    ]);
    assert_eq!(head, "2 200");
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Byte-level mutations as a fuzzer makes them: bits flipped, bytes set to edge values,
/// ranges cut, duplicated or inserted, the whole truncated.
fn mutate(bytes: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    use rand_core::Rng;
    let mut out = bytes.to_vec();
    let pick = |rng: &mut ChaCha20Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    for _ in 0..1 + pick(rng, 4) {
        let len = out.len();
        match pick(rng, 6) {
            0 if len > 0 => {
                let i = pick(rng, len);
                out[i] ^= 1 << pick(rng, 8);
            }
            1 if len > 0 => {
                // Mostly in the headers, where the parsers decide.
                let i = pick(rng, len.min(64));
                out[i] = [0, 1, 0x7f, 0x80, 0xff][pick(rng, 5)];
            }
            2 => out.truncate(pick(rng, len + 1)),
            3 if len > 0 => {
                let (a, b) = (pick(rng, len), pick(rng, len));
                let (a, b) = (a.min(b), a.max(b));
                out.drain(a..b);
            }
            4 if len > 0 => {
                let (a, k) = (pick(rng, len), 1 + pick(rng, 64));
                let chunk: Vec<u8> = out[a..(a + k).min(len)].to_vec();
                let at = pick(rng, len);
                out.splice(at..at, chunk);
            }
            _ => {
                let at = pick(rng, len + 1);
                let junk: Vec<u8> = (0..1 + pick(rng, 16))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                out.splice(at..at, junk);
            }
        }
    }
    out
}

#[test]
fn mutated_keys_uploads_and_http_requests_get_4xx_and_the_service_stays_up() {
    let tmp = tempdir("service-mutations");
    let server = Server::start(
        &tmp.join("state"),
        &models_dir(&tmp),
        &["--workers", "2", "--max-queue", "1000"],
    );
    let client = ServiceClient::new(&server.url);
    let mut owner = Owner::new(7);
    let keys = owner.register(&client);
    let images = vec![Owner::image(5)];
    let upload = owner.upload(&images);
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let allowed = |status: u16| (400..500).contains(&status) || status == 201 || status == 202;
    // Keys: every mutation is refused with a reason, or (a mutation the parsers cannot tell
    // from keys) registered.
    for _ in 0..60 {
        let bad = mutate(&owner.keys, &mut rng);
        let (status, body) = client
            .raw("POST", "/v1/keys?model=cryptonets-mnist", None, &bad)
            .unwrap();
        assert!(
            allowed(status),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Uploads: refused with a reason, or accepted and then done or failed with one.
    let jobs = format!("/v1/jobs?key_id={}", keys.key_id);
    let mut accepted = Vec::new();
    for _ in 0..200 {
        let bad = mutate(&upload, &mut rng);
        let (status, body) = client.raw("POST", &jobs, Some(&keys.token), &bad).unwrap();
        assert!(
            allowed(status),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()));
        } else {
            let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
            accepted.push(job["job_id"].as_str().unwrap().to_string());
        }
    }
    for job in &accepted {
        let started = Instant::now();
        loop {
            let record = client.job(job, &keys.token).unwrap();
            match record.status {
                JobStatus::Done => break,
                JobStatus::Failed => {
                    assert!(record.error.is_some_and(|e| !e.is_empty()));
                    break;
                }
                _ => {
                    assert!(started.elapsed() < Duration::from_secs(300));
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    // Raw HTTP: malformed request lines, headers and lengths, on fresh connections.
    let address = server.url.strip_prefix("http://").unwrap().to_string();
    let raw_requests: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /v1/keys?model=cryptonets-mnist HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
        b"POST /v1/keys?model=cryptonets-mnist HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        b"POST /v1/keys?model=cryptonets-mnist HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec(), vec![b'a'; 1 << 20], b"\r\n\r\n".to_vec()].concat(),
        b"GET /v1/jobs/%00%ff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /v1/jobs?key_id=%zz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ];
    for (k, request) in raw_requests.iter().enumerate() {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        use std::io::{Read, Write};
        let _ = stream.write_all(request);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        // An HTTP error status, or the connection closed without one; never a 5xx.
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.0 4"),
            "request {k}: {answer}"
        );
    }
    // Still up, and still exact.
    let (status, _) = client.raw("GET", "/healthz", None, &[]).unwrap();
    assert_eq!(status, 200);
    let job = client.submit(&keys.key_id, &keys.token, &upload).unwrap();
    let result = client.wait(&job.job_id, &keys.token, |_| {}).unwrap();
    owner.check(&result, &images);
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}
