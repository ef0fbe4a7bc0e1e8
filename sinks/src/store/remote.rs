//! Tables on object storage (`storage.url = "s3://bucket/prefix"`).
//!
//! The Parquet files are written as on local disk, under `data_dir` (the staging
//! copy), uploaded to the same path under the URL, committed, and only then deleted
//! locally; a merge downloads its inputs to their staging names and uploads its output
//! the same way. An upload no commit took (a crash between the two) is deleted by
//! vacuum, as on local disk. The Delta logs live beside the files, and their commits
//! rely on the store's conditional writes (`If-None-Match: *`): [`Remote::probe`]
//! refuses, at start, a store that ignores them, since two commits could then take the
//! same version and one of them would be lost.

use std::path::Path;
use std::sync::{Arc, Once};

use deltalake_core::logstore::{
    default_logstore, logstore_factories, LogStore, LogStoreFactory, ObjectStoreRef,
    StorageConfig as DeltaStorageConfig,
};
use deltalake_core::DeltaResult;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use swarmscope_processors::schema::Table;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::config::S3Config;
use crate::{Error, Result};

/// A bucket and prefix the tables live under.
#[derive(Clone)]
pub struct Remote {
    /// `s3://bucket/prefix/`, with its trailing slash.
    url: Url,
    /// The bucket, rooted at its top.
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

impl Remote {
    /// The store of `url`, configured by `[storage.s3]` over the `AWS_*` variables.
    pub fn connect(url: &Url, config: &S3Config) -> Result<Remote> {
        let bucket = url.host_str().unwrap_or_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        if config.allow_http {
            builder = builder.with_allow_http(true);
        }
        let store = builder
            .build()
            .map_err(|e| Error::ObjectStore(format!("storage.url {url}: {e}")))?;
        let prefix = ObjectPath::from(url.path().trim_matches('/'));
        let mut url = Url::parse(&format!("s3://{bucket}/"))
            .map_err(|e| Error::ObjectStore(format!("storage.url {url}: {e}")))?;
        if !prefix.as_ref().is_empty() {
            url.set_path(&format!("/{prefix}/"));
        }
        register_log_store();
        Ok(Remote {
            url,
            store: Arc::new(store),
            prefix,
        })
    }

    /// `s3://bucket/prefix/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `s3://bucket`, the URL DataFusion finds the store under.
    pub fn bucket_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("");
        url
    }

    /// The bucket's store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// `s3://bucket/prefix/<table>/`.
    pub fn table_url(&self, table: Table) -> Result<Url> {
        self.url
            .join(&format!("{}/", table.name()))
            .map_err(|e| Error::ObjectStore(format!("{}: {e}", self.url)))
    }

    /// The object of a file at `relative` (`date=.../hour=.../f.parquet`) in `table`.
    pub fn object(&self, table: Table, relative: &str) -> ObjectPath {
        let mut parts: Vec<&str> = Vec::new();
        if !self.prefix.as_ref().is_empty() {
            parts.push(self.prefix.as_ref());
        }
        parts.push(table.name());
        parts.push(relative);
        ObjectPath::from(parts.join("/"))
    }

    /// The URL of that object, as DataFusion reads it.
    pub fn object_url(&self, table: Table, relative: &str) -> String {
        let bucket = self.url.host_str().unwrap_or_default();
        format!("s3://{bucket}/{}", self.object(table, relative))
    }

    /// Writes an object twice under `If-None-Match: *`: a store that honours
    /// conditional writes refuses the second. One that takes it would let two Delta
    /// commits claim the same version, so it is refused, naming the store.
    pub async fn probe(&self) -> Result<()> {
        let path = {
            let mut parts: Vec<String> = Vec::new();
            if !self.prefix.as_ref().is_empty() {
                parts.push(self.prefix.to_string());
            }
            parts.push(format!("_swarmscope/probe-{}", uuid::Uuid::new_v4()));
            ObjectPath::from(parts.join("/"))
        };
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let store = &self.store;
        store
            .put_opts(&path, PutPayload::from_static(b"first"), create())
            .await
            .map_err(|e| {
                Error::ObjectStore(format!("storage.url {}: cannot write: {e}", self.url))
            })?;
        let second = store
            .put_opts(&path, PutPayload::from_static(b"second"), create())
            .await;
        let _ = store.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Ok(_) => Err(Error::ObjectStore(format!(
                "storage.url {}: the object store ignores conditional writes (it overwrote an \
                 object written with If-None-Match: *); Delta commits need them, or two commits \
                 could take the same version. Use a store that supports them (AWS S3, MinIO, \
                 Cloudflare R2, ...)",
                self.url
            ))),
            Err(e) => Err(Error::ObjectStore(format!(
                "storage.url {}: probing conditional writes: {e}",
                self.url
            ))),
        }
    }

    /// Uploads the local file `local` as `relative` of `table`.
    pub async fn upload(&self, table: Table, relative: &str, local: &Path) -> Result<()> {
        let object = self.object(table, relative);
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(Error::io(local))?;
        let mut upload = object_store::buffered::BufWriter::new(self.store(), object.clone());
        let copied = tokio::io::copy(&mut file, &mut upload).await;
        let closed = match copied {
            Ok(_) => upload.shutdown().await,
            Err(e) => {
                let _ = upload.abort().await;
                Err(e)
            }
        };
        closed.map_err(|e| Error::ObjectStore(format!("uploading {object}: {e}")))
    }

    /// Downloads `relative` of `table` to the local file `local`, synced.
    pub async fn download(&self, table: Table, relative: &str, local: &Path) -> Result<()> {
        use futures::StreamExt;
        let object = self.object(table, relative);
        let failed =
            |e: &dyn std::fmt::Display| Error::ObjectStore(format!("downloading {object}: {e}"));
        if let Some(dir) = local.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::io(dir))?;
        }
        let mut stream = self
            .store
            .get(&object)
            .await
            .map_err(|e| failed(&e))?
            .into_stream();
        let mut file = tokio::fs::File::create(local)
            .await
            .map_err(Error::io(local))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(&e))?;
            file.write_all(&chunk).await.map_err(Error::io(local))?;
        }
        file.sync_all().await.map_err(Error::io(local))?;
        Ok(())
    }

    /// Whether any object lies directly under `prefix`.
    pub async fn has_objects(&self, prefix: &ObjectPath) -> Result<bool> {
        let listed = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(|e| Error::ObjectStore(format!("listing {prefix}: {e}")))?;
        Ok(!listed.objects.is_empty())
    }

    /// Deletes `relative` of `table` (an upload no commit took); best effort, as
    /// vacuum deletes what is left.
    pub async fn delete(&self, table: Table, relative: &str) {
        let object = self.object(table, relative);
        if let Err(e) = self.store.delete(&object).await {
            tracing::warn!(object = %object, error = %e, "an upload no commit took is left for vacuum");
        }
    }
}

/// Delta's default log store (commits by conditional writes) for `s3://` tables:
/// deltalake-core knows only `file://` and `memory://` by itself.
fn register_log_store() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                logstore_factories().insert(url, Arc::new(ConditionalPutLogStore));
            }
        }
    });
}

struct ConditionalPutLogStore;

impl LogStoreFactory for ConditionalPutLogStore {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &DeltaStorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
