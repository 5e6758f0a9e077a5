//! The data owner's side of the service, for programs to embed: make keys, register them,
//! encrypt, submit, wait, fetch and decrypt, in either mode. The secret key never leaves
//! these types; what goes over the wire is evaluation keys and ciphertexts.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! use cryptonets_core::Backend;
//! use cryptonets_core::model::polynomial::PolynomialNetwork;
//! use cryptonets_host::service::client::ServiceClient;
//! use cryptonets_host::service::owner::SingleOwner;
//!
//! let bytes = std::fs::read("models/cryptonets-mnist.cnmd").map_err(|e| e.to_string())?;
//! let network = PolynomialNetwork::parse(&bytes).map_err(|e| e.to_string())?;
//! let client = ServiceClient::new("http://127.0.0.1:8080");
//! let owner = SingleOwner::register(client, "cryptonets-mnist", network, Backend::detect())?;
//! let image = [0u8; 28 * 28];
//! let answer = owner.predict(&image, |_| {})?;
//! println!("logits {:?} in {:.2} s", answer.logits, answer.round_trip_seconds);
//! owner.unregister()?;
//! # Ok(())
//! # }
//! ```

use std::cell::Cell;
use std::sync::Mutex;
use std::time::Instant;

use cryptonets_core::Backend;
use cryptonets_core::bfv::SecretKey;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{PlannedSingle, SingleKeys};
use cryptonets_core::network::{EvaluationKeys, PlannedNetwork};
use num_bigint::BigInt;
use rand_chacha::ChaCha20Rng;

use super::client::ServiceClient;
use super::models::batch_plan;
use super::server::{JobMode, Registered};
use super::store::JobMeta;
use crate::bundle::{Bundle, RESULTS, UPLOADS};
use crate::pipeline::{
    BatchFile, BatchKind, BatchShape, decrypt_network_batch, encrypt_network_batch, os_rng,
};

/// One answer of the service, decrypted.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The exact logits, per image.
    pub logits: Vec<Vec<BigInt>>,
    /// The job's final record (its evaluation time, its bytes).
    pub job: JobMeta,
    /// Seconds to encrypt.
    pub encrypt_seconds: f64,
    /// Seconds from the start of the upload to the result fetched.
    pub round_trip_seconds: f64,
    /// Seconds to decrypt.
    pub decrypt_seconds: f64,
    /// Bytes sent (the encrypted images).
    pub upload_bytes: usize,
    /// Bytes received (the encrypted results).
    pub download_bytes: usize,
}

/// What every owner holds: the service, the model's name there, its keys' registration.
#[derive(Debug)]
struct Registration {
    client: ServiceClient,
    registered: Registered,
    eval_key_bytes: usize,
    keygen_seconds: f64,
}

impl Registration {
    fn new(
        client: ServiceClient,
        model: &str,
        mode: JobMode,
        keygen: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Self, String> {
        let started = Instant::now();
        let keys = keygen()?;
        let keygen_seconds = started.elapsed().as_secs_f64();
        let registered = client.register_keys(model, mode, &keys)?;
        Ok(Self {
            client,
            registered,
            eval_key_bytes: keys.len(),
            keygen_seconds,
        })
    }

    /// Submits `upload`, waits (telling `progress`), fetches and deletes the result.
    fn run(
        &self,
        upload: &[u8],
        mut progress: impl FnMut(&JobMeta),
    ) -> Result<(JobMeta, Vec<u8>, f64), String> {
        let (key_id, token) = (&self.registered.key_id, &self.registered.token);
        let started = Instant::now();
        let job = self.client.submit(key_id, token, upload)?;
        let mut record = job.clone();
        let result = self.client.wait(&job.job_id, token, |j| {
            record = j.clone();
            progress(j);
        })?;
        let seconds = started.elapsed().as_secs_f64();
        self.client.delete_job(&job.job_id, token)?;
        Ok((record, result, seconds))
    }

    /// One prediction: `encrypt` makes the upload (timed), the service runs it, `decrypt`
    /// reads the result for that job (timed) into logits per image.
    fn ask(
        &self,
        encrypt: impl FnOnce() -> Result<Vec<u8>, String>,
        progress: impl FnMut(&JobMeta),
        decrypt: impl FnOnce(&JobMeta, &[u8]) -> Result<Vec<Vec<BigInt>>, String>,
    ) -> Result<Answer, String> {
        let started = Instant::now();
        let upload = encrypt()?;
        let encrypt_seconds = started.elapsed().as_secs_f64();
        let (job, result, round_trip_seconds) = self.run(&upload, progress)?;
        let started = Instant::now();
        let logits = decrypt(&job, &result)?;
        Ok(Answer {
            logits,
            job,
            encrypt_seconds,
            round_trip_seconds,
            decrypt_seconds: started.elapsed().as_secs_f64(),
            upload_bytes: upload.len(),
            download_bytes: result.len(),
        })
    }

    fn unregister(self) -> Result<(), String> {
        self.client
            .delete_keys(&self.registered.key_id, &self.registered.token)
    }
}

/// An owner that sends one image at a time (single-image mode), under one key set.
#[derive(Debug)]
pub struct SingleOwner {
    network: PolynomialNetwork,
    planned: PlannedSingle,
    secret: SecretKey,
    rng: Mutex<ChaCha20Rng>,
    registration: Registration,
}

impl SingleOwner {
    /// Plans `network` as the service does, makes keys and registers the evaluation keys
    /// for the service's model `model`.
    pub fn register(
        client: ServiceClient,
        model: &str,
        network: PolynomialNetwork,
        backend: Backend,
    ) -> Result<Self, String> {
        let planned = PlannedSingle::new(&network, backend)
            .map_err(|e| format!("no single-image plan: {e}"))?;
        let mut rng = os_rng()?;
        let (params, plan) = (&planned.params, &planned.plan);
        let secret = SecretKey::generate(&params.channels()[0], &mut rng);
        let registration = Registration::new(client, model, JobMode::Single, || {
            SingleKeys::generate(params, plan, &secret, &mut rng)
                .map(|k| k.to_bytes(params))
                .map_err(|e| e.to_string())
        })?;
        Ok(Self {
            network,
            planned,
            secret,
            rng: Mutex::new(rng),
            registration,
        })
    }

    /// Bytes of the evaluation keys registered.
    pub fn eval_key_bytes(&self) -> usize {
        self.registration.eval_key_bytes
    }

    /// Seconds the keys took to make.
    pub fn keygen_seconds(&self) -> f64 {
        self.registration.keygen_seconds
    }

    /// The service's prediction for one image (its C x H x W pixels), decrypted.
    pub fn predict(&self, image: &[u8], progress: impl FnMut(&JobMeta)) -> Result<Answer, String> {
        let planned = &self.planned;
        let (params, plan) = (&planned.params, &planned.plan);
        // The upload's random id, which the result must carry.
        let id = Cell::new([0u8; 16]);
        let encrypt = || {
            let mut rng = self.rng.lock().map_err(|_| "the owner's generator")?;
            let per_channel = crate::single_image::encrypt_image(
                planned,
                &self.network,
                &self.secret,
                image,
                &mut rng,
            )
            .map_err(|e| e.to_string())?;
            let mut fresh = [0u8; 16];
            rand_core::Rng::fill_bytes(&mut *rng, &mut fresh);
            id.set(fresh);
            Ok(Bundle {
                kind: UPLOADS,
                id: fresh,
                objects: vec![per_channel.into_iter().map(|b| vec![b]).collect()],
            }
            .to_bytes())
        };
        let decrypt = |job: &JobMeta, result: &[u8]| {
            let channels = params.channels().len();
            let parts = plan.layout.output().len();
            let object = params.channels()[0].max_ciphertext_bytes();
            let results = Bundle::from_bytes(result, RESULTS, channels, parts, object)?;
            if results.id != id.get() || results.objects.len() != 1 {
                return Err(format!(
                    "job {}: the result answers another upload",
                    job.job_id
                ));
            }
            let (logits, _) =
                crate::single_image::decrypt_image(planned, &self.secret, &results.objects[0])
                    .map_err(|e| e.to_string())?;
            Ok(vec![logits])
        };
        self.registration.ask(encrypt, progress, decrypt)
    }

    /// Deletes the keys from the service.
    pub fn unregister(self) -> Result<(), String> {
        self.registration.unregister()
    }
}

/// An owner that sends its images as one batch (one image a slot), under one key set.
#[derive(Debug)]
pub struct BatchOwner {
    network: PolynomialNetwork,
    planned: PlannedNetwork,
    secret: SecretKey,
    registration: Registration,
}

impl BatchOwner {
    /// Plans `network` for batches of up to `images` images as the service does, makes
    /// keys and registers the evaluation keys for the service's model `model`.
    pub fn register(
        client: ServiceClient,
        model: &str,
        network: PolynomialNetwork,
        backend: Backend,
        images: usize,
    ) -> Result<Self, String> {
        let planned = batch_plan(&network, backend, images)?;
        let params = &planned.params;
        let mut rng = os_rng()?;
        let secret = SecretKey::generate(&params.channels()[0], &mut rng);
        let registration = Registration::new(client, model, JobMode::Batch, || {
            // Unpacked batches: relinearization keys, no Galois keys.
            EvaluationKeys::generate(params, &secret, 1, &mut rng)
                .map(|k| k.to_bytes(params))
                .map_err(|e| e.to_string())
        })?;
        Ok(Self {
            network,
            planned,
            secret,
            registration,
        })
    }

    /// The largest batch: the ring degree.
    pub fn capacity(&self) -> usize {
        self.planned.params.degree()
    }

    /// Bytes of the evaluation keys registered.
    pub fn eval_key_bytes(&self) -> usize {
        self.registration.eval_key_bytes
    }

    /// Seconds the keys took to make.
    pub fn keygen_seconds(&self) -> f64 {
        self.registration.keygen_seconds
    }

    /// The service's predictions for `images` (each its C x H x W pixels), decrypted.
    pub fn predict(
        &self,
        images: &[&[u8]],
        progress: impl FnMut(&JobMeta),
    ) -> Result<Answer, String> {
        if images.is_empty() || images.len() > self.capacity() {
            return Err(format!(
                "a batch holds 1 to {} images, not {}",
                self.capacity(),
                images.len()
            ));
        }
        let params = &self.planned.params;
        let batch_id = Cell::new([0u8; 16]);
        let encrypt = || {
            let batch = encrypt_network_batch(
                params,
                &self.network,
                &self.secret,
                images,
                &mut os_rng()?,
                &|| {},
            )
            .map_err(|e| e.to_string())?;
            batch_id.set(batch.header.batch_id);
            Ok(batch.to_bytes())
        };
        let decrypt = |job: &JobMeta, result: &[u8]| {
            let shape = BatchShape::of(&self.network);
            let logits = BatchFile::from_bytes_for(result, BatchKind::Logits, shape)
                .map_err(|e| format!("the result: {e}"))?;
            if logits.header.batch_id != batch_id.get()
                || logits.header.images as usize != images.len()
            {
                return Err(format!(
                    "job {}: the result answers another batch",
                    job.job_id
                ));
            }
            decrypt_network_batch(params, &self.secret, &logits)
                .map(|(logits, _)| logits)
                .map_err(|e| e.to_string())
        };
        self.registration.ask(encrypt, progress, decrypt)
    }

    /// Deletes the keys from the service.
    pub fn unregister(self) -> Result<(), String> {
        self.registration.unregister()
    }
}
