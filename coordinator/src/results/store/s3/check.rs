//! The bucket checked before any crate runs, with the same requests the uploader will make.
//!
//! A server that accepts a HEAD but refuses what storing needs — a PutObject, a multipart upload,
//! our checksum headers, reading back, deleting — would otherwise let a run build every crate
//! and then store nothing. So at start (with `write`) a small object and a two-part multipart
//! upload (a 5 MiB part, S3's smallest, and a small one) go up through the uploader's own code,
//! are read back and compared, and deleted. The first refusal stops the run with the server's
//! own message and what to try.

use super::{ErrorChain, S3Store};
use crate::results::store::{PublishError, RAW_CONTENT_TYPE};
use anyhow::{Context, Result, bail};
use aws_sdk_s3::error::ProvideErrorMetadata;
use sha2::{Digest, Sha256};

/// Where the check's objects go (and are deleted from).
const CHECK_PREFIX: &str = ".crater-at-home/start-check";
/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 << 20;

impl S3Store {
    /// Refuses to start on a missing bucket, bad credentials, or (with `write`) a server that
    /// does not store what the uploader sends; the message names which.
    pub(super) async fn check_access(&self, write: bool) -> Result<()> {
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
        if write {
            self.check_writes().await?;
        }
        Ok(())
    }

    async fn check_writes(&self) -> Result<()> {
        let small_key = format!("{CHECK_PREFIX}/small");
        let parts_key = format!("{CHECK_PREFIX}/in-parts");
        let small = b"crater-at-home can write here\n".to_vec();
        self.put_bytes(&small_key, small.clone(), RAW_CONTENT_TYPE)
            .await
            .map_err(|e| self.refusal("a PutObject", e))?;

        // The uploader's own multipart path, from a file, in two parts.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("in-parts");
        let big: Vec<u8> = (0..MIN_PART + 4096).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &big)?;
        self.put_multipart(
            &parts_key,
            &path,
            big.len() as u64,
            MIN_PART,
            RAW_CONTENT_TYPE,
        )
        .await
        .map_err(|e| self.refusal("a multipart upload of two parts", e))?;

        for (key, expected) in [(&small_key, &small), (&parts_key, &big)] {
            let read = self.read_object(key).await?;
            if Sha256::digest(&read) != Sha256::digest(expected) {
                bail!(
                    "the bucket `{}` at {} gave back {} bytes for the {} it was given at \
                     s3://{0}/{key}: the server does not store what is uploaded",
                    self.bucket,
                    self.endpoint,
                    read.len(),
                    expected.len()
                );
            }
        }
        for key in [&small_key, &parts_key] {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the bucket `{}` refuses to delete s3://{0}/{key}, which the start-up \
                         check wrote ({}): grant s3:DeleteObject, or delete it by hand",
                        self.bucket,
                        ErrorChain(&e)
                    )
                })?;
        }
        Ok(())
    }

    /// An object the check just wrote, which must be there.
    async fn read_object(&self, key: &str) -> Result<Vec<u8>> {
        let read = self.get(key).await.with_context(|| {
            format!(
                "the bucket `{}` refuses to give back s3://{0}/{key}, which the start-up check \
                 just wrote",
                self.bucket
            )
        })?;
        match read {
            Some((bytes, _)) => Ok(bytes.to_vec()),
            None => bail!(
                "the bucket `{}` lost s3://{0}/{key}, which the start-up check just wrote",
                self.bucket
            ),
        }
    }

    /// What to say when the server refused `what`.
    fn refusal(&self, what: &str, error: PublishError) -> anyhow::Error {
        let error = match error {
            PublishError::Transient(e) | PublishError::Permanent(e) => e,
        };
        let text = format!("{error:#}");
        let hint = if text.contains("AccessDenied") || text.contains("403") {
            "the credentials may read the bucket but not write it: they need s3:PutObject, \
             s3:GetObject, s3:DeleteObject, s3:AbortMultipartUpload and s3:ListBucket"
        } else {
            "an S3-compatible server must take PutObject and multipart uploads with an \
             x-amz-checksum-crc32 header; check its version and settings, or try --s3-path-style"
        };
        anyhow::anyhow!(
            "the bucket `{}` at {} refuses {what}, so no result could be stored there: \
             {text}\n  hint: {hint}",
            self.bucket,
            self.endpoint
        )
    }
}
