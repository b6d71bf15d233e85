//! The S3 store: the same keys as the local directory, in a bucket (AWS or any S3-compatible
//! server: `--s3-endpoint`, `--s3-path-style`).
//!
//! Region and credentials come from the standard AWS chain (environment, profile, instance
//! role). Before any work starts the bucket is checked ([`check`]: it exists, and we may write,
//! upload in parts, read and delete), so wrong credentials, a missing bucket or a server that
//! refuses our requests stop the run with a clear message instead of failing every upload later.
//! Logs above [`MULTIPART_THRESHOLD`] go up as multipart uploads streamed part by part from the
//! spool file, never whole in memory. Errors are classified for the uploader
//! ([`uploads`](crate::results::uploads)), which retries: throttling, 5xx, timeouts and
//! connection errors are transient.
//!
//! Every upload carries its CRC32 in an `x-amz-checksum-crc32` header, computed here from the
//! file (a second read, from the page cache). The SDK's own default is to compute checksums
//! itself and, for a streamed body, to send them as an aws-chunked trailer, which strict
//! S3-compatible servers refuse (Garage: "Invalid payload signature"). So the SDK is told to
//! compute checksums only where S3 requires one, and the header we send is one that AWS S3,
//! Garage, MinIO and Ceph all check.

mod check;
mod crate_list;
mod listing;

pub use listing::Listed;

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
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use crater_proto::tool::Tool;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

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
            .timeout_config(timeouts)
            // Our own CRC32 header instead of the SDK's trailers (see the module's comment).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
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
        self.put_bytes(&key, json, JSON_CONTENT_TYPE).await
    }

    /// One PutObject of bytes in memory.
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), PublishError> {
        let crc = crc32_header(crc32fast::hash(&bytes));
        self.put(key, ByteStream::from(bytes), crc, content_type)
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
            let part_size = PART_SIZE.max(len.div_ceil(MAX_PARTS));
            return self
                .put_multipart(key, path, len, part_size, content_type)
                .await;
        }
        let crc = file_crc32(path, 0, len).await?;
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| PublishError::Permanent(anyhow!("reading {}: {e}", path.display())))?;
        self.put(key, body, crc, content_type).await
    }

    /// One PutObject; `crc32` is the body's, as the header wants it.
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        crc32: String,
        content_type: &str,
    ) -> Result<(), PublishError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_crc32(crc32)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("uploading {key}"), e))?;
        Ok(())
    }

    /// A multipart upload of the `len` bytes of `path`, in parts of `part_size` (the last one
    /// smaller), each with its CRC32.
    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        part_size: u64,
        content_type: &str,
    ) -> Result<(), PublishError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            // The parts carry CRC32s: S3 wants to hear so before the first one.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| classify(&format!("starting the upload of {key}"), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
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
        let crc = file_crc32(path, offset, size).await?;
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
            .checksum_crc32(crc.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("uploading part {number} of {key}"), e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(part.e_tag().map(str::to_owned))
            .checksum_crc32(crc)
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
        let mut found = FinishedIndex::new();
        for object in self.list(&prefix).await? {
            let Some((name, version)) = parse_result_key(&object.relative) else {
                continue;
            };
            if !wanted.contains(&(name.as_str(), version.as_str())) {
                continue;
            }
            let finished_at = object.modified.map(time::OffsetDateTime::from);
            found.insert(
                (name, version),
                Existing {
                    finished_at,
                    status: None,
                },
            );
        }
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
        let Some((bytes, _)) = self.get(&key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))
    }

    /// An object's bytes and when it was stored; `None` when there is no such key.
    pub async fn get(&self, key: &str) -> Result<Option<(bytes::Bytes, Option<SystemTime>)>> {
        let Some(object) = self.get_object(key).await? else {
            return Ok(None);
        };
        let stored_at = (object.last_modified()).and_then(|t| SystemTime::try_from(*t).ok());
        let bytes = object
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))?
            .into_bytes();
        Ok(Some((bytes, stored_at)))
    }

    /// A GetObject whose body is still to be read; `None` when there is no such key.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => bail!("reading s3://{}/{key}: {}", self.bucket, ErrorChain(&e)),
        }
    }
}

/// A CRC32 as the `x-amz-checksum-crc32` header carries it: the big-endian bytes in base64.
fn crc32_header(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC32 header of `len` bytes of `path` from `offset`, read in pieces.
async fn file_crc32(path: &Path, offset: u64, len: u64) -> Result<String, PublishError> {
    let path = path.to_owned();
    let crc = tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
        let file = std::fs::File::open(&path)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buffer = vec![0; 1 << 20];
        let mut done = 0;
        while done < len {
            let want = (len - done).min(buffer.len() as u64) as usize;
            file.read_exact_at(&mut buffer[..want], offset + done)?;
            hasher.update(&buffer[..want]);
            done += want as u64;
        }
        Ok(hasher.finalize())
    })
    .await
    .map_err(|e| PublishError::Permanent(e.into()))?
    .map_err(|e| PublishError::Permanent(anyhow!("reading a file to upload: {e}")))?;
    Ok(crc32_header(crc))
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
    fn the_crc32_header_is_big_endian_base64() {
        // S3's own example: the CRC32 of "Hello, World!" is 0xec4ac3d0.
        assert_eq!(crc32fast::hash(b"Hello, World!"), 0xec4a_c3d0);
        assert_eq!(crc32_header(0xec4a_c3d0), "7ErD0A==");
    }

    #[tokio::test]
    async fn a_files_crc32_is_read_in_pieces_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let part = file_crc32(&path, 1_000_003, 1_500_000).await.ok().unwrap();
        assert_eq!(
            part,
            crc32_header(crc32fast::hash(&bytes[1_000_003..2_500_003]))
        );
    }

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
