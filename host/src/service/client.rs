//! The service's client library: what `cryptonets client` runs, for other programs to embed.
//! Blocking HTTP (ureq); every error is a message naming the request and the service's
//! answer.

use std::time::Duration;

use super::server::{JobMode, Registered};
use super::store::{JobMeta, JobStatus};

/// The largest answer read: a result bundle of a full job, with margin.
const MAX_ANSWER_BYTES: u64 = 1 << 30;

/// A connection to one service.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    base: String,
    agent: ureq::Agent,
}

/// An answer: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The body if the status is `want`, else an error with the service's message.
    fn expect(self, want: u16, what: &str) -> Result<Vec<u8>, String> {
        if self.status == want {
            return Ok(self.body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        Err(format!("{what}: HTTP {}: {message}", self.status))
    }
}

impl ServiceClient {
    /// A client of the service at `base` (such as `http://127.0.0.1:8080`, or `https://...`
    /// verified against the system's roots).
    pub fn new(base: &str) -> Self {
        Self::with_agent(base, ureq::Agent::config_builder())
    }

    /// A client of an HTTPS service whose certificate chains to the CA certificates of
    /// `ca_pem` (PEM) alone, such as a private deployment's.
    pub fn with_ca(base: &str, ca_pem: &[u8]) -> Result<Self, String> {
        let certs = ureq::tls::parse_pem(ca_pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CA certificates: {e}"))?;
        if certs.is_empty() {
            return Err("CA certificates: no PEM certificate found".into());
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
            .build();
        Ok(Self::with_agent(
            base,
            ureq::Agent::config_builder().tls_config(tls),
        ))
    }

    fn with_agent(
        base: &str,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Self {
        let agent = config
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn answer(
        &self,
        what: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, String> {
        let mut response = result.map_err(|e| format!("{what}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(Answer { status, body })
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> Result<serde_json::Value, String> {
        let what = "list the models";
        let answer = self.answer(
            what,
            self.agent.get(format!("{}/v1/models", self.base)).call(),
        )?;
        let body = answer.expect(200, what)?;
        serde_json::from_slice(&body).map_err(|e| format!("{what}: {e}"))
    }

    /// `POST /v1/keys?model=MODEL&mode=MODE`: registers evaluation keys for jobs of `mode`;
    /// the token is the only way to use or delete them.
    pub fn register_keys(
        &self,
        model: &str,
        mode: JobMode,
        keys: &[u8],
    ) -> Result<Registered, String> {
        let what = "register the evaluation keys";
        let request = self
            .agent
            .post(format!("{}/v1/keys", self.base))
            .query("model", model)
            .query("mode", mode.name())
            .header("content-type", "application/octet-stream");
        let body = self.answer(what, request.send(keys))?.expect(201, what)?;
        serde_json::from_slice(&body).map_err(|e| format!("{what}: {e}"))
    }

    /// `DELETE /v1/keys/{key_id}`.
    pub fn delete_keys(&self, key_id: &str, token: &str) -> Result<(), String> {
        let what = "delete the keys";
        let request = self
            .agent
            .delete(format!("{}/v1/keys/{key_id}", self.base))
            .header("authorization", Self::bearer(token));
        self.answer(what, request.call())?.expect(204, what)?;
        Ok(())
    }

    /// `POST /v1/jobs?key_id=ID`: submits encrypted images (a bundle of single-image
    /// uploads, or a batch file, as the keys' mode says).
    pub fn submit(&self, key_id: &str, token: &str, upload: &[u8]) -> Result<JobMeta, String> {
        let what = "submit the job";
        let request = self
            .agent
            .post(format!("{}/v1/jobs", self.base))
            .query("key_id", key_id)
            .header("authorization", Self::bearer(token))
            .header("content-type", "application/octet-stream");
        let body = self.answer(what, request.send(upload))?.expect(202, what)?;
        serde_json::from_slice(&body).map_err(|e| format!("{what}: {e}"))
    }

    /// `GET /v1/jobs/{job_id}`.
    pub fn job(&self, job_id: &str, token: &str) -> Result<JobMeta, String> {
        self.job_waiting(job_id, token, None)
    }

    /// `GET /v1/jobs/{job_id}?wait=SECONDS`: the record once it changes (or after `wait`).
    fn job_waiting(
        &self,
        job_id: &str,
        token: &str,
        wait: Option<Duration>,
    ) -> Result<JobMeta, String> {
        let what = "poll the job";
        let mut request = self
            .agent
            .get(format!("{}/v1/jobs/{job_id}", self.base))
            .header("authorization", Self::bearer(token));
        if let Some(wait) = wait {
            request = request.query("wait", format!("{}", wait.as_secs_f64()));
        }
        let body = self.answer(what, request.call())?.expect(200, what)?;
        serde_json::from_slice(&body).map_err(|e| format!("{what}: {e}"))
    }

    /// Waits (long polls) until the job is done (its result) or failed (its reason),
    /// calling `progress` with each record seen.
    pub fn wait(
        &self,
        job_id: &str,
        token: &str,
        mut progress: impl FnMut(&JobMeta),
    ) -> Result<Vec<u8>, String> {
        loop {
            let job = self.job_waiting(job_id, token, Some(Duration::from_secs(20)))?;
            progress(&job);
            match job.status {
                JobStatus::Done => return self.result(job_id, token),
                JobStatus::Failed => {
                    return Err(format!(
                        "job {job_id} failed: {}",
                        job.error.unwrap_or_default()
                    ));
                }
                _ => {}
            }
        }
    }

    /// `GET /v1/jobs/{job_id}/result`.
    pub fn result(&self, job_id: &str, token: &str) -> Result<Vec<u8>, String> {
        let what = "fetch the result";
        let request = self
            .agent
            .get(format!("{}/v1/jobs/{job_id}/result", self.base))
            .header("authorization", Self::bearer(token));
        self.answer(what, request.call())?.expect(200, what)
    }

    /// `DELETE /v1/jobs/{job_id}`.
    pub fn delete_job(&self, job_id: &str, token: &str) -> Result<(), String> {
        let what = "delete the job";
        let request = self
            .agent
            .delete(format!("{}/v1/jobs/{job_id}", self.base))
            .header("authorization", Self::bearer(token));
        self.answer(what, request.call())?.expect(204, what)?;
        Ok(())
    }

    /// A raw request, for tests of the service's answers: (status, body).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {path}");
        let result = match method {
            "GET" | "DELETE" => {
                let mut request = match method {
                    "GET" => self.agent.get(&url),
                    _ => self.agent.delete(&url),
                };
                if let Some(t) = token {
                    request = request.header("authorization", Self::bearer(t));
                }
                request.call()
            }
            _ => {
                let mut request = self.agent.post(&url);
                if let Some(t) = token {
                    request = request.header("authorization", Self::bearer(t));
                }
                request.send(body)
            }
        };
        let answer = self.answer(&what, result)?;
        Ok((answer.status, answer.body))
    }
}
