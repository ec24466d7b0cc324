//! The runtime image (`make image`): `tests/scripts/image.sh` builds it FROM scratch with buildah (vfs storage
//! under `~/.cache/azora/containers`, chroot isolation: no daemon, no registry, no user namespaces needed) from
//! the debug operator binary; then `azora-operator --version` and `azora-operator crd` run inside it with
//! `buildah run`. The image is non-root (User 65532) and has no shell. If buildah cannot work on this machine the
//! test fails with buildah's own error — never a skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use azora_tests::operator::operator_bin;
use azora_tests::repo_root;
use serde::Deserialize as _;

const KINDS: [&str; 9] = [
    "Region",
    "Tenant",
    "FailoverPolicy",
    "BackupSchedule",
    "Backup",
    "Restore",
    "ChaosExperiment",
    "DrDrill",
    "Database",
];

fn script() -> PathBuf {
    repo_root().join("tests/scripts/image.sh")
}

/// Runs `cmd`, fails with its output unless it succeeds, returns stdout.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `buildah` with the script's image store (`--root/--runroot` under the cache, `--storage-driver vfs`).
struct Buildah {
    opts: Vec<String>,
}

impl Buildah {
    fn new() -> anyhow::Result<Self> {
        let opts = run(Command::new("bash").arg(script()).arg("--storage-opts"))?;
        Ok(Self {
            opts: opts.split_whitespace().map(str::to_owned).collect(),
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.args(&self.opts).env("BUILDAH_ISOLATION", "chroot");
        c
    }
}

/// Removes the working container and the test's image tag, whatever the test's outcome.
struct Cleanup<'a> {
    buildah: &'a Buildah,
    container: String,
    tag: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.buildah.cmd().args(["umount", &self.container]).output();
        let _ = self.buildah.cmd().args(["rm", &self.container]).output();
        let _ = self.buildah.cmd().args(["rmi", "--force", &self.tag]).output();
    }
}

#[test]
fn image_builds_from_scratch_and_runs_the_operator_as_nonroot() -> anyhow::Result<()> {
    let install = repo_root().join("tests/scripts/install-buildah.sh");
    run(Command::new("bash").arg(&install))
        .context("installing buildah (tests/scripts/install-buildah.sh)")?;
    let binary = operator_bin()?;
    let buildah = Buildah::new()?;
    let pid = std::process::id();
    let tag = format!("localhost/azora-operator-test:{pid}");
    let container = format!("azora-image-test-{pid}");
    // What a killed earlier run left (its Drop never ran): containers, then images, of test processes that
    // are gone (a run still going, from another checkout, keeps its own).
    let dead = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists())
    };
    for stale in run(buildah
        .cmd()
        .args(["containers", "--noheading", "--format", "{{.ContainerName}}"]))?
    .lines()
    .filter(|c| dead(c, "azora-image-test-"))
    {
        let _ = buildah.cmd().args(["rm", stale]).output();
    }
    for stale in run(buildah
        .cmd()
        .args(["images", "--noheading", "--format", "{{.Name}}:{{.Tag}}"]))?
    .lines()
    .filter(|i| dead(i, "localhost/azora-operator-test:"))
    {
        let _ = buildah.cmd().args(["rmi", "--force", stale]).output();
    }
    let _cleanup = Cleanup {
        buildah: &buildah,
        container: container.clone(),
        tag: tag.clone(),
    };

    let built = run(Command::new("bash")
        .arg(script())
        .arg("--binary")
        .arg(&binary)
        .arg("--strip")
        .args(["--tag", &tag]))
    .context("building the image with tests/scripts/image.sh (buildah, vfs, chroot isolation)")?;
    assert!(
        built.lines().any(|l| l.starts_with("id: ")) && built.lines().any(|l| l.starts_with("size: ")),
        "the script prints the image id and size: {built}"
    );
    eprintln!(
        "image from {} ({} bytes): {}",
        binary.display(),
        std::fs::metadata(&binary)?.len(),
        built.trim().replace('\n', ", ")
    );

    // The image config: non-root, the operator as entrypoint, `run` by default, OCI labels.
    let inspect: serde_json::Value =
        serde_json::from_str(&run(buildah.cmd().args(["inspect", "--type", "image", &tag]))?)?;
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/azora-operator"]),
        "{config}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["run"]), "{config}");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "{config}"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.licenses"], "Apache-2.0",
        "{config}"
    );

    run(buildah
        .cmd()
        .args(["from", "--pull-never", "--name", &container, &tag]))?;

    // The root filesystem as built (before `buildah run` adds /etc/hosts, /etc/resolv.conf to the working
    // container): no shell, no executable but the binary and its libraries.
    let mount = PathBuf::from(run(buildah.cmd().args(["mount", &container]))?.trim());
    assert!(mount.is_dir(), "buildah mount gave {}", mount.display());
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash", "bin/busybox"] {
        assert!(
            !mount.join(shell).exists() && mount.join(shell).symlink_metadata().is_err(),
            "/{shell} must not exist in the image"
        );
    }
    assert!(mount.join("usr/local/bin/azora-operator").is_file());
    assert!(mount.join("etc/ssl/certs/ca-certificates.crt").is_file());
    let passwd = std::fs::read_to_string(mount.join("etc/passwd"))?;
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let group = std::fs::read_to_string(mount.join("etc/group"))?;
    assert!(group.contains("nonroot:x:65532:"), "{group}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(mount.join("tmp"))?.permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "/tmp mode {mode:o}");
    }
    let mut executables = Vec::new();
    files(&mount, &mount, &mut executables)?;
    let unexpected: Vec<_> = executables
        .iter()
        .filter(|p| {
            !(p.as_str() == "usr/local/bin/azora-operator"
                || p.starts_with("lib/")
                || p.starts_with("lib64/")
                || p.starts_with("usr/lib"))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected executables in the image: {unexpected:?}"
    );
    run(buildah.cmd().args(["umount", &container]))?;

    // Inside the image: the version is the workspace's, and `crd` prints all 8 CRDs.
    let in_image = |args: &[&str]| {
        run(buildah
            .cmd()
            .args([
                "run",
                "--isolation",
                "chroot",
                &container,
                "--",
                "/usr/local/bin/azora-operator",
            ])
            .args(args))
    };
    let version = in_image(&["--version"])?;
    assert_eq!(
        version.trim(),
        format!("azora-operator {}", env!("CARGO_PKG_VERSION")),
        "--version inside the image"
    );
    let crds = in_image(&["crd"])?;
    let mut kinds = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&crds) {
        let doc = serde_yaml::Value::deserialize(doc)?;
        if doc.is_null() {
            continue;
        }
        assert_eq!(doc["kind"].as_str(), Some("CustomResourceDefinition"), "{doc:?}");
        assert_eq!(doc["spec"]["group"].as_str(), Some("azora.io"), "{doc:?}");
        if let Some(kind) = doc["spec"]["names"]["kind"].as_str() {
            kinds.insert(kind.to_owned());
        }
    }
    assert_eq!(
        crds.matches("kind: CustomResourceDefinition").count(),
        KINDS.len(),
        "{crds}"
    );
    assert_eq!(
        kinds,
        KINDS.iter().map(|k| (*k).to_owned()).collect::<BTreeSet<_>>()
    );

    Ok(())
}

/// Executable regular files under `dir`, as paths relative to `root`.
fn files(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.is_dir() {
            files(root, &entry.path(), out)?;
        } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            out.push(entry.path().strip_prefix(root)?.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The chart's default image (values.yaml `image.repository` and `image.tag`, else Chart.yaml `appVersion`) is
/// what `make image` tags by default.
#[test]
fn chart_default_image_is_what_make_image_tags() -> anyhow::Result<()> {
    let tag = run(Command::new("bash").arg(script()).arg("--print-tag"))?;
    let chart = repo_root().join("charts/azora-operator");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml"))?)?;
    let meta: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(chart.join("Chart.yaml"))?)?;
    let repository = values["image"]["repository"].as_str().unwrap_or_default();
    let image_tag = match values["image"]["tag"].as_str() {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => meta["appVersion"].as_str().unwrap_or_default().to_owned(),
    };
    assert_eq!(
        format!("{repository}:{image_tag}"),
        tag.trim(),
        "charts/azora-operator default image vs tests/scripts/image.sh --print-tag (make image)"
    );
    assert_eq!(
        image_tag,
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion is the workspace version"
    );
    Ok(())
}
