//! The S3 store: the same keys as the local directory, in a bucket (AWS or any S3-compatible
//! server: `--s3-endpoint`, `--s3-path-style`).
//!
//! Region and credentials come from the standard AWS chain (environment, profile, instance
//! role). Before any work starts the bucket is checked (it exists, we may list and write it), so
//! wrong credentials or a missing bucket stop the run with a clear message instead of failing
//! every upload later. Logs above [`MULTIPART_THRESHOLD`] go up as multipart uploads streamed
//! part by part from the spool file, never whole in memory. Errors are classified for the
//! uploader ([`uploads`](crate::results::uploads)), which retries: throttling, 5xx, timeouts and
//! connection errors are transient.

use super::{
    Existing, FinishedIndex, HTML_CONTENT_TYPE, JSON_CONTENT_TYPE, PublishError, RAW_CONTENT_TYPE,
    html_key, parse_result_key, raw_key, result_key,
};
use crate::results::outbox::Entry;
use crate::results::record::ResultRecord;
use anyhow::{Context, Result, anyhow, bail};
use aws_config::meta::region::RegionProviderChain;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use crater_proto::tool::Tool;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Larger files go up in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// S3's minimum part size is 5 MiB; 8 MiB parts keep a 1 GiB log at 128 parts.
const PART_SIZE: u64 = 8 << 20;
/// S3 allows at most this many parts; bigger files get bigger parts.
const MAX_PARTS: u64 = 10_000;
/// Parts in flight at once for one upload (each streamed from the file).
const PART_CONCURRENCY: usize = 4;
/// Verdicts read at once (a small selection, or `--retry-failed`).
const GET_CONCURRENCY: usize = 32;
/// Up to this many selected crates, reading their verdicts beats listing a large bucket.
const FEW: usize = 256;
/// Where the write check at start puts its object.
const WRITE_CHECK_KEY: &str = ".crater-at-home/write-check";

#[derive(Debug, Clone)]
pub struct S3Options {
    pub bucket: String,
    /// An S3-compatible server instead of AWS.
    pub endpoint: Option<String>,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`.
    pub path_style: bool,
    /// Limit on connecting and on waiting for a response; a stalled server is an outage.
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
}

impl S3Store {
    /// A client for the bucket, after checking it exists (and, with `write`, can be written).
    pub async fn connect(options: &S3Options, write: bool) -> Result<S3Store> {
        if let Some(endpoint) = &options.endpoint {
            check_endpoint(endpoint)?;
        }
        let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
        let shared = aws_config::defaults(BehaviorVersion::v2026_01_12())
            .region(region)
            .load()
            .await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .read_timeout(options.timeout)
            .build();
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            .timeout_config(timeouts);
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let store = S3Store {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: options.bucket.clone(),
            endpoint: options
                .endpoint
                .clone()
                .unwrap_or_else(|| "AWS S3".to_owned()),
        };
        store.check_access(write).await?;
        Ok(store)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Refuses to start on a missing bucket, bad credentials or no write access, naming which.
    async fn check_access(&self, write: bool) -> Result<()> {
        let bucket = &self.bucket;
        if let Err(e) = self.client.head_bucket().bucket(bucket).send().await {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let code = e.code().unwrap_or_default().to_owned();
            let detail = ErrorChain(&e);
            if detail.to_string().contains("credentials") {
                bail!(
                    "no usable AWS credentials for the bucket `{bucket}`: set AWS_ACCESS_KEY_ID \
                     and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance role \
                     ({detail})"
                );
            }
            match (status, code.as_str()) {
                (Some(404), _) | (_, "NoSuchBucket") => {
                    bail!("the bucket `{bucket}` does not exist at {}", self.endpoint)
                }
                (Some(403), _) | (Some(400), "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                    bail!(
                        "access to the bucket `{bucket}` was denied (HTTP 403): check the \
                         credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, \
                         or the instance role) and the bucket's policy ({detail})"
                    )
                }
                (Some(301), _) => bail!(
                    "the bucket `{bucket}` is in another region: set AWS_REGION to it ({detail})"
                ),
                _ => bail!(
                    "cannot reach the bucket `{bucket}` at {}: {detail}",
                    self.endpoint
                ),
            }
        }
        if !write {
            return Ok(());
        }
        self.client
            .put_object()
            .bucket(bucket)
            .key(WRITE_CHECK_KEY)
            .content_type(RAW_CONTENT_TYPE)
            .body(ByteStream::from_static(b"crater-at-home can write here\n"))
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot write to the bucket `{bucket}` ({}): results could not be stored",
                    ErrorChain(&e)
                )
            })?;
        Ok(())
    }

    /// Stores an outbox entry: raw log, HTML page (rendered into the entry first), then JSON.
    pub async fn publish(&self, entry: &Entry) -> Result<(), PublishError> {
        let (tool, record) = (entry.tool, &entry.record);
        let (name, version) = (record.name.as_str(), record.version.as_str());
        let html = {
            let entry = entry.clone();
            // Rendered once per entry (a retry during an outage reuses it): written beside its
            // name and renamed, so an existing page is a whole one.
            tokio::task::spawn_blocking(move || -> Result<std::path::PathBuf> {
                let html = entry.html_path();
                if html.exists() {
                    return Ok(html);
                }
                let partial = html.with_extension("partial");
                let log = std::io::BufReader::new(std::fs::File::open(entry.raw_path())?);
                let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
                super::local::render_page(entry.tool, &entry.record, log, &mut out)?;
                std::io::Write::flush(&mut out)?;
                std::fs::rename(&partial, &html)?;
                Ok(html)
            })
            .await
            .map_err(|e| PublishError::Permanent(e.into()))?
            .map_err(|e| PublishError::Permanent(e.context("rendering the HTML page")))?
        };
        self.put_file(
            &raw_key(tool, name, version),
            &entry.raw_path(),
            RAW_CONTENT_TYPE,
        )
        .await?;
        self.put_file(&html_key(tool, name, version), &html, HTML_CONTENT_TYPE)
            .await?;
        let mut json =
            serde_json::to_vec_pretty(record).map_err(|e| PublishError::Permanent(e.into()))?;
        json.push(b'\n');
        let key = result_key(tool, name, version);
        self.put(&key, ByteStream::from(json), JSON_CONTENT_TYPE)
            .await
    }

    /// Uploads a file: one request when small, a multipart upload streamed from it when large.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<(), PublishError> {
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| PublishError::Permanent(anyhow!("reading {}: {e}", path.display())))?
            .len();
        if len > MULTIPART_THRESHOLD {
            return self.put_multipart(key, path, len, content_type).await;
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| PublishError::Permanent(anyhow!("reading {}: {e}", path.display())))?;
        self.put(key, body, content_type).await
    }

    /// One PutObject.
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        content_type: &str,
    ) -> Result<(), PublishError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("uploading {key}"), e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        content_type: &str,
    ) -> Result<(), PublishError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| classify(&format!("starting the upload of {key}"), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let part_size = PART_SIZE.max(len.div_ceil(MAX_PARTS));
        let parts = (0..len.div_ceil(part_size)).map(|i| {
            let offset = i * part_size;
            (i as i32 + 1, offset, part_size.min(len - offset))
        });
        let uploaded: Result<Vec<CompletedPart>, PublishError> =
            futures::stream::iter(parts.map(|(number, offset, size)| {
                self.upload_part(key, &upload_id, path, number, offset, size)
            }))
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&format!("completing the upload of {key}"), e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Parts of an unfinished upload are billed until aborted; the retry starts afresh.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        number: i32,
        offset: u64,
        size: u64,
    ) -> Result<CompletedPart, PublishError> {
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|e| PublishError::Permanent(anyhow!("reading {}: {e}", path.display())))?;
        let part = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("uploading part {number} of {key}"), e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(part.e_tag().map(str::to_owned))
            .set_checksum_crc32(part.checksum_crc32().map(str::to_owned))
            .set_checksum_crc32_c(part.checksum_crc32_c().map(str::to_owned))
            .set_checksum_crc64_nvme(part.checksum_crc64_nvme().map(str::to_owned))
            .build())
    }

    /// The finished results among `wanted`: a few are read one by one (verdicts included); for
    /// more, `{tool}/results/` is listed (every page; progress on stderr for a large bucket)
    /// and, with `need_status`, the verdicts of the wanted ones read after.
    pub async fn finished(
        &self,
        tool: Tool,
        wanted: &[(String, String)],
        need_status: bool,
    ) -> Result<FinishedIndex> {
        if wanted.len() <= FEW {
            return self.read_results(tool, wanted).await;
        }
        let wanted: HashSet<(&str, &str)> = wanted
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let prefix = format!("{tool}/results/");
        let spinner = indicatif::ProgressBar::new_spinner().with_message(format!(
            "listing finished results in s3://{}/{prefix}",
            self.bucket
        ));
        spinner.enable_steady_tick(Duration::from_millis(200));
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let mut found = FinishedIndex::new();
        let mut listed = 0u64;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow!("listing s3://{}/{prefix}: {}", self.bucket, ErrorChain(&e))
            })?;
            for object in page.contents() {
                listed += 1;
                let Some(relative) = object.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                let Some((name, version)) = parse_result_key(relative) else {
                    continue;
                };
                if !wanted.contains(&(name.as_str(), version.as_str())) {
                    continue;
                }
                let finished_at = object
                    .last_modified()
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.secs()).ok());
                found.insert(
                    (name, version),
                    Existing {
                        finished_at,
                        status: None,
                    },
                );
            }
            spinner.set_message(format!(
                "listing finished results in s3://{}/{prefix}: {listed}",
                self.bucket
            ));
        }
        spinner.finish_and_clear();
        if need_status {
            let keys: Vec<(String, String)> = found.keys().cloned().collect();
            found.extend(self.read_results(tool, &keys).await?);
        }
        Ok(found)
    }

    /// The stored verdicts of `crates` (those that have one), read concurrently.
    async fn read_results(&self, tool: Tool, crates: &[(String, String)]) -> Result<FinishedIndex> {
        let records: Vec<Option<ResultRecord>> = futures::stream::iter(
            crates
                .iter()
                .map(|(name, version)| self.result(tool, name, version)),
        )
        .buffer_unordered(GET_CONCURRENCY)
        .try_collect()
        .await?;
        Ok(records
            .into_iter()
            .flatten()
            .map(|r| ((r.name.clone(), r.version.clone()), Existing::from(&r)))
            .collect())
    }

    /// A stored verdict, if there is one.
    pub async fn result(
        &self,
        tool: Tool,
        name: &str,
        version: &str,
    ) -> Result<Option<ResultRecord>> {
        let key = result_key(tool, name, version);
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => bail!("reading s3://{}/{key}: {}", self.bucket, ErrorChain(&e)),
        };
        let bytes = object
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))
    }
}

/// Plain HTTP only on loopback: results and signed requests cross no network in the clear.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        if endpoint.starts_with("https://") {
            return Ok(());
        }
        bail!("--s3-endpoint {endpoint}: give an https:// (or, on loopback, http://) URL");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--s3-endpoint {endpoint}: plain HTTP is only allowed on loopback; use https://");
    }
    Ok(())
}

/// Transient (retry soon) or permanent, from what S3 answered, if anything.
fn classify<E>(what: &str, error: SdkError<E, HttpResponse>) -> PublishError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or_default();
            matches!(
                code,
                "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestTimeout"
                    | "RequestTimeTooSkewed"
                    | "InternalError"
                    | "ServiceUnavailable"
            ) || error
                .raw_response()
                .is_some_and(|r| r.status().is_server_error() || r.status().as_u16() == 429)
        }
        _ => false,
    };
    let error = anyhow!("{what}: {}", ErrorChain(&error));
    if transient {
        PublishError::Transient(error)
    } else {
        PublishError::Permanent(error)
    }
}

/// An error and its sources, `: `-separated: short enough for one line, unlike the SDK's Debug.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_endpoints_only_on_loopback() {
        for fine in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "https://s3.example.com",
        ] {
            assert!(check_endpoint(fine).is_ok(), "{fine}");
        }
        for refused in ["http://10.0.0.5:9000", "http://minio.internal", "ftp://x"] {
            assert!(check_endpoint(refused).is_err(), "{refused}");
        }
    }
}
