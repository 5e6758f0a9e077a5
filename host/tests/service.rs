//! The prediction service through the binary, on 127.0.0.1 with a port the system picks:
//! the owner's round trip (`cryptonets client run`), tokens that isolate owners, bad
//! requests answered with a 4xx and a JSON reason, a service killed mid-job that finishes it
//! after a restart, and the OpenAPI document in step with the routes.

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
use cryptonets_host::service::server::ROUTES;
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
        .register_keys("cryptonets-mnist", &alice.keys)
        .unwrap();
    let b = client.register_keys("cryptonets-mnist", &bob.keys).unwrap();
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
    // More images than a job holds, said by the header: 413 once the body is read.
    let mut many = upload.clone();
    many[24..28].copy_from_slice(&300u32.to_le_bytes());
    expect(
        client.raw("POST", &jobs, Some(&a.token), &many).unwrap(),
        413,
        "at most",
    );
    // More bytes than a job can hold: 413, or the connection closed before the client is
    // done sending them.
    let huge = vec![0u8; 200 << 20];
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
        metrics.contains("cryptonets_jobs{status=\"done\"} 1"),
        "{metrics}"
    );
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn eight_owners_at_once_each_get_their_own_exact_answer() {
    let tmp = tempdir("service-owners");
    let server = Server::start(&tmp.join("state"), &models_dir(&tmp), &["--workers", "2"]);
    let url = server.url.clone();
    let owners: Vec<_> = (0..8u64)
        .map(|k| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut owner = Owner::new(10 + k);
                let client = ServiceClient::new(&url);
                let keys = client
                    .register_keys("cryptonets-mnist", &owner.keys)
                    .unwrap();
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

#[test]
fn a_service_killed_mid_job_finishes_it_after_a_restart() {
    let tmp = tempdir("service-kill");
    let (state, models) = (tmp.join("state"), models_dir(&tmp));
    let mut owner = Owner::new(3);
    let images: Vec<Vec<u8>> = (0..6).map(Owner::image).collect();
    let upload = owner.upload(&images);
    let server = Server::start(&state, &models, &["--workers", "1"]);
    let client = ServiceClient::new(&server.url);
    let keys = client
        .register_keys("cryptonets-mnist", &owner.keys)
        .unwrap();
    let job = client.submit(&keys.key_id, &keys.token, &upload).unwrap();
    // Killed (SIGKILL) as soon as the job runs.
    let started = Instant::now();
    loop {
        let record = client.job(&job.job_id, &keys.token).unwrap();
        if record.status != JobStatus::Queued || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(server);
    let server = Server::start(&state, &models, &["--workers", "1"]);
    let client = ServiceClient::new(&server.url);
    let result = client.wait(&job.job_id, &keys.token, |_| {}).unwrap();
    owner.check(&result, &images);
    let record = client.job(&job.job_id, &keys.token).unwrap();
    assert_eq!((record.status, record.done_images), (JobStatus::Done, 6));
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
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
