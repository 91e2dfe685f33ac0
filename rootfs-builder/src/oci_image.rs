//! A busybox OCI image as an image-layout tarball (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), the form `ctr images import` reads: no
//! registry is needed to give containerd an image.
//!
//! The tarball holds one uncompressed layer (busybox, its applets, /etc/passwd
//! and group, the usual mount points) and one manifest per requested image
//! name. Shell images run `sh`; pause images (for the CRI plugin's
//! `sandbox_image`) run `sleep 2147483647`. Both share the layer.
//! The output is deterministic: every timestamp is 0, entries are sorted and
//! owned by root, so the same busybox always gives the same digests.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

use crate::bundle::{GROUP, PASSWD};
use crate::initramfs::APPLETS;

/// The OCI image-layout's name for an index entry: `ctr images import`
/// names the image after it when it is a full reference. (The only
/// annotation: a single key keeps the JSON's key order fixed.)
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The shell image's name unless `--name` says otherwise.
pub const DEFAULT_NAME: &str = "localhost/vmrun/busybox:latest";
/// The pause image's name unless `--pause-name` says otherwise.
pub const DEFAULT_PAUSE_NAME: &str = "localhost/vmrun/pause:latest";

/// Errors building the image.
#[derive(Debug, thiserror::Error)]
pub enum OciImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the layer: {0}")]
    Layer(std::io::Error),
    #[error("image metadata: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("no image name given")]
    NoName,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OciImageError + '_ {
    move |source| OciImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an image of the tarball runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `sh`: a general-purpose busybox image.
    Shell,
    /// `sleep 2147483647`: a pod sandbox's pause container.
    Pause,
}

impl Flavor {
    fn cmd(&self) -> Vec<String> {
        match self {
            Flavor::Shell => vec!["sh".into()],
            Flavor::Pause => vec!["sleep".into(), "2147483647".into()],
        }
    }
}

/// What goes into the tarball.
pub struct OciImageSpec {
    /// A static busybox.
    pub busybox: PathBuf,
    /// `(image name, flavor)`, one manifest each, in this order in index.json.
    pub images: Vec<(String, Flavor)>,
}

/// A content-addressed blob of the layout.
struct Blob {
    descriptor: Descriptor,
    bytes: Vec<u8>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn blob(media_type: MediaType, bytes: Vec<u8>) -> Result<Blob, OciImageError> {
    let digest: Digest = Sha256Digest::from_str(&sha256_hex(&bytes))?.into();
    Ok(Blob {
        descriptor: Descriptor::new(media_type, bytes.len() as u64, digest),
        bytes,
    })
}

/// A tar header for a root-owned entry with mtime 0.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// A deterministic tar writer over a byte buffer.
struct TarWriter(tar::Builder<Vec<u8>>);

impl TarWriter {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn dir(&mut self, path: &str, mode: u32) -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.0
            .append_data(&mut h, format!("{path}/"), std::io::empty())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target)
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        self.0.into_inner()
    }
}

/// The root filesystem layer: an uncompressed tar, entries sorted by path.
fn layer(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = TarWriter::new();
    let mut dirs = [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("home/user", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("var", 0o755),
    ];
    dirs.sort();
    let mut applets: Vec<&str> = APPLETS.to_vec();
    applets.sort_unstable();
    for (dir, mode) in dirs {
        tar.dir(dir, mode)?;
        match dir {
            "bin" => {
                // "[" sorts before "busybox"; keep one sorted sequence.
                let mut entries: Vec<&str> = applets.clone();
                entries.push("busybox");
                entries.sort_unstable();
                for name in entries {
                    let path = format!("bin/{name}");
                    if name == "busybox" {
                        tar.file(&path, 0o755, busybox)?;
                    } else {
                        tar.symlink(&path, "busybox")?;
                    }
                }
            }
            "etc" => {
                tar.file("etc/group", 0o644, GROUP.as_bytes())?;
                tar.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
            }
            _ => {}
        }
    }
    tar.finish()
}

fn annotations(name: &str) -> HashMap<String, String> {
    HashMap::from([(OCI_REF_NAME.to_string(), name.to_string())])
}

/// The image-layout tarball's bytes.
pub fn tarball(busybox: &[u8], images: &[(String, Flavor)]) -> Result<Vec<u8>, OciImageError> {
    if images.is_empty() {
        return Err(OciImageError::NoName);
    }
    let layer = blob(
        MediaType::ImageLayer,
        layer(busybox).map_err(OciImageError::Layer)?,
    )?;
    // Uncompressed: the diff ID is the layer's own digest.
    let diff_id = layer.descriptor.digest().to_string();

    let mut blobs: Vec<Blob> = Vec::new();
    let mut index_entries = Vec::new();
    for (name, flavor) in images {
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(
                ConfigBuilder::default()
                    .env(vec![
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                            .to_string(),
                    ])
                    .cmd(flavor.cmd())
                    .working_dir("/")
                    .build()?,
            )
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![diff_id.clone()])
                    .build()?,
            )
            .build()?;
        let config = blob(MediaType::ImageConfig, config.to_string()?.into_bytes())?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor.clone())
            .layers(vec![layer.descriptor.clone()])
            .build()?;
        let manifest = blob(MediaType::ImageManifest, manifest.to_string()?.into_bytes())?;
        let mut entry = manifest.descriptor.clone();
        entry.set_annotations(Some(annotations(name)));
        index_entries.push(entry);
        blobs.push(config);
        blobs.push(manifest);
    }
    blobs.push(layer);
    blobs.sort_by(|a, b| {
        a.descriptor
            .digest()
            .digest()
            .cmp(b.descriptor.digest().digest())
    });
    blobs.dedup_by(|a, b| a.descriptor.digest() == b.descriptor.digest());

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .build()?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;

    let mut tar = TarWriter::new();
    let io = OciImageError::Layer;
    tar.dir("blobs", 0o755).map_err(io)?;
    tar.dir("blobs/sha256", 0o755).map_err(io)?;
    for blob in &blobs {
        let path = format!("blobs/sha256/{}", blob.descriptor.digest().digest());
        tar.file(&path, 0o644, &blob.bytes).map_err(io)?;
    }
    tar.file("index.json", 0o644, index.to_string()?.as_bytes())
        .map_err(io)?;
    tar.file("oci-layout", 0o644, layout.to_string()?.as_bytes())
        .map_err(io)?;
    tar.finish().map_err(io)
}

/// Writes the tarball for `spec` to `output` (atomically: a temporary file
/// renamed into place).
pub fn build(spec: &OciImageSpec, output: &Path) -> Result<(), OciImageError> {
    let busybox = fs::read(&spec.busybox).map_err(io(&spec.busybox))?;
    let bytes = tarball(&busybox, &spec.images)?;
    let mut tmp = output.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, output).map_err(io(output))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, OciLayout};

    use super::*;

    fn images() -> Vec<(String, Flavor)> {
        vec![
            (DEFAULT_NAME.to_string(), Flavor::Shell),
            (DEFAULT_PAUSE_NAME.to_string(), Flavor::Pause),
        ]
    }

    /// Path → (header, content) of every entry of a tar.
    fn entries(bytes: &[u8]) -> BTreeMap<String, (tar::Header, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = BTreeMap::new();
        let mut order = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            order.push(path.clone());
            assert!(
                out.insert(path, (entry.header().clone(), data)).is_none(),
                "duplicate entry"
            );
        }
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "entries are sorted");
        out
    }

    fn blob_of<'a>(
        outer: &'a BTreeMap<String, (tar::Header, Vec<u8>)>,
        descriptor: &Descriptor,
    ) -> &'a [u8] {
        let path = format!("blobs/sha256/{}", descriptor.digest().digest());
        let (_, data) = outer.get(&path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(data.len() as u64, descriptor.size(), "{path} size");
        assert_eq!(
            sha256_hex(data),
            descriptor.digest().digest(),
            "{path} digest"
        );
        data
    }

    #[test]
    fn layout_is_valid_and_digests_match_contents() {
        let bytes = tarball(b"#!fake busybox", &images()).unwrap();
        let outer = entries(&bytes);
        for (path, (header, _)) in &outer {
            assert_eq!(header.mtime().unwrap(), 0, "{path} mtime");
            assert_eq!(header.uid().unwrap(), 0, "{path} uid");
        }
        let layout = OciLayout::from_reader(outer["oci-layout"].1.as_slice()).unwrap();
        assert_eq!(layout.image_layout_version(), "1.0.0");
        let index = ImageIndex::from_reader(outer["index.json"].1.as_slice()).unwrap();
        assert_eq!(index.schema_version(), 2);
        assert_eq!(index.manifests().len(), 2);

        let mut layer_digests = Vec::new();
        for (descriptor, (name, flavor)) in index.manifests().iter().zip(images()) {
            assert_eq!(descriptor.media_type(), &MediaType::ImageManifest);
            let annotations = descriptor.annotations().as_ref().unwrap();
            assert_eq!(annotations[OCI_REF_NAME], name);
            assert_eq!(annotations.len(), 1);

            let manifest = ImageManifest::from_reader(blob_of(&outer, descriptor)).unwrap();
            assert_eq!(manifest.schema_version(), 2);
            assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
            let config =
                ImageConfiguration::from_reader(blob_of(&outer, manifest.config())).unwrap();
            assert_eq!(config.architecture(), &Arch::Amd64);
            assert_eq!(config.os(), &Os::Linux);
            let cmd = config.config().as_ref().unwrap().cmd().clone().unwrap();
            assert_eq!(cmd, flavor.cmd());

            assert_eq!(manifest.layers().len(), 1);
            let layer = &manifest.layers()[0];
            assert_eq!(layer.media_type(), &MediaType::ImageLayer);
            blob_of(&outer, layer);
            assert_eq!(
                config.rootfs().diff_ids(),
                &vec![layer.digest().to_string()]
            );
            layer_digests.push(layer.digest().clone());
        }
        // One layer, shared: 2 configs + 2 manifests + 1 layer.
        assert_eq!(layer_digests[0], layer_digests[1]);
        let blob_count = outer
            .keys()
            .filter(|p| p.starts_with("blobs/sha256/"))
            .count();
        assert_eq!(blob_count, 5 + 1, "five blobs and their directory");
    }

    #[test]
    fn layer_is_a_busybox_rootfs() {
        let bytes = layer(b"#!fake busybox").unwrap();
        let files = entries(&bytes);
        let (header, data) = &files["bin/busybox"];
        assert_eq!(data, b"#!fake busybox");
        assert_eq!(header.mode().unwrap(), 0o755);
        for applet in ["sh", "sleep", "echo", "cat", "uname"] {
            let (header, _) = &files[&format!("bin/{applet}")];
            assert_eq!(header.entry_type(), tar::EntryType::Symlink);
            assert_eq!(
                header.link_name().unwrap().unwrap(),
                Path::new("busybox"),
                "bin/{applet}"
            );
        }
        assert!(String::from_utf8_lossy(&files["etc/passwd"].1).starts_with("root:x:0:0:"));
        assert!(files.contains_key("etc/group"));
        for dir in ["dev/", "proc/", "sys/", "tmp/", "etc/", "root/"] {
            assert_eq!(
                files[dir].0.entry_type(),
                tar::EntryType::Directory,
                "{dir}"
            );
        }
        assert_eq!(files["tmp/"].0.mode().unwrap(), 0o1777);
    }

    #[test]
    fn output_is_deterministic() {
        let a = tarball(b"bb", &images()).unwrap();
        let b = tarball(b"bb", &images()).unwrap();
        assert!(a == b, "two builds differ");
        let c = tarball(b"another busybox", &images()).unwrap();
        assert!(a != c, "the busybox is not in the image");
    }

    #[test]
    fn no_name_is_an_error() {
        assert!(matches!(tarball(b"bb", &[]), Err(OciImageError::NoName)));
    }

    #[test]
    fn build_writes_the_file() {
        let dir = std::env::temp_dir().join(format!("vmrun-oci-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let busybox = dir.join("busybox");
        fs::write(&busybox, b"bb").unwrap();
        let output = dir.join("image.tar");
        let spec = OciImageSpec {
            busybox,
            images: images(),
        };
        build(&spec, &output).unwrap();
        assert!(fs::read(&output).unwrap() == tarball(b"bb", &images()).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
