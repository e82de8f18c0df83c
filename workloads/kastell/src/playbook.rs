//! `kastell playbook test PLAYBOOK.yaml --alert ALERT.json`: a playbook run in dry-run
//! against one alert, printing one JSON line per step — whether the trigger and the
//! condition hold, the rendered inputs (secrets redacted), what the step would send,
//! whether it needs approval, the release action of a containment and any protected
//! asset that would make the platform refuse it. Nothing is sent anywhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use kastell_core::Alert;
use kastell_crds::ResourceSet;
use kastell_respond::safety::response_safety;
use kastell_respond::{PlaybookSet, RunnerSettings, Runners, Safety};

/// Arguments of `kastell playbook`.
#[derive(clap::Args, Debug)]
pub struct PlaybookArgs {
    #[command(subcommand)]
    command: PlaybookCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PlaybookCommand {
    /// Dry-run a playbook against one alert; one JSON line per planned step.
    Test {
        /// The Playbook resource file (every playbook in it is planned).
        playbook: PathBuf,
        /// One alert as JSON, as `kastell run` stores it (see examples/soc/alerts/).
        #[arg(long)]
        alert: PathBuf,
        /// A SecOpsPlatform file whose `response.protected` assets are checked.
        #[arg(long)]
        platform: Option<PathBuf>,
        /// The case id the alert is planned as the opening alert of.
        #[arg(long, default_value_t = 1)]
        case_id: i64,
    },
}

/// Runs `kastell playbook`.
///
/// # Errors
/// A file cannot be read, the alert is not one alert, or stdout fails.
pub fn run(args: PlaybookArgs) -> anyhow::Result<ExitCode> {
    let PlaybookCommand::Test {
        playbook,
        alert,
        platform,
        case_id,
    } = args.command;
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::new(stdout);
    let code = test(
        &playbook,
        &alert,
        platform.as_deref(),
        case_id,
        &mut out,
        &mut std::io::stderr().lock(),
    )?;
    out.flush().context("writing the plan")?;
    Ok(code)
}

/// The command over any outputs, so tests drive exactly what `run` does.
fn test(
    playbook_file: &Path,
    alert_file: &Path,
    platform_file: Option<&Path>,
    case_id: i64,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let resources = load(playbook_file)?;
    let (playbooks, invalid) = PlaybookSet::compile(resources.playbooks);
    for problem in &invalid {
        writeln!(err, "{problem}")?;
    }
    if playbooks.is_empty() {
        writeln!(err, "{}: no valid playbook", playbook_file.display())?;
        return Ok(ExitCode::FAILURE);
    }
    let alert = read_alert(alert_file)?;
    let safety = match platform_file {
        Some(file) => {
            let mut problems = Vec::new();
            let safety = response_safety(&load(file)?, &mut problems);
            for problem in &problems {
                writeln!(err, "{problem}")?;
            }
            safety
        }
        None => Safety::default(),
    };
    let runners = Runners::new(&RunnerSettings::default()).context("setting up the runners")?;
    for playbook in playbooks.iter() {
        for step in kastell_respond::plan::plan(playbook, &alert, case_id, &runners, &safety) {
            serde_json::to_writer(&mut *out, &step)?;
            writeln!(out)?;
        }
    }
    Ok(if invalid.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn load(file: &Path) -> anyhow::Result<ResourceSet> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut set = ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(file, &text, &mut set, &mut errors);
    if let Some(first) = errors.first() {
        anyhow::bail!("{first}");
    }
    Ok(set)
}

/// One alert: a JSON document, or a file of JSON lines holding exactly one.
fn read_alert(file: &Path) -> anyhow::Result<Alert> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if let Ok(alert) = serde_json::from_str::<Alert>(&text) {
        return Ok(alert);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [one] => serde_json::from_str(one)
            .with_context(|| format!("{}: not a Kastell alert", file.display())),
        [] => anyhow::bail!("{}: no alert in the file", file.display()),
        more => anyhow::bail!(
            "{}: {} lines; give one alert (split the file)",
            file.display(),
            more.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc")
    }

    fn plan_lines(
        playbook: &Path,
        alert: &Path,
        platform: Option<&Path>,
    ) -> (Vec<serde_json::Value>, String, ExitCode) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = test(playbook, alert, platform, 7, &mut out, &mut err).unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines, String::from_utf8(err).unwrap(), code)
    }

    #[test]
    fn plans_the_demo_playbook_against_a_real_alert() {
        let (lines, err, code) = plan_lines(
            &examples().join("playbook.yaml"),
            &examples().join("alerts/wazuh-sshd-brute-force.json"),
            None,
        );
        assert_eq!(code, ExitCode::SUCCESS, "{err}");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["step"], "record-case");
        assert_eq!(lines[0]["triggered"], true);
        assert_eq!(lines[0]["approval_required"], false);
        assert!(lines[0]["inputs"]["message"]
            .as_str()
            .unwrap()
            .starts_with("case 7 opened: "));
        assert_eq!(lines[1]["approval_required"], true);
        assert_eq!(lines[1]["would"]["method"], "POST");
        assert_eq!(lines[1]["inputs"]["headers"]["x-kastell-case"], "7");
    }

    #[test]
    fn plans_the_containment_playbook_with_protected_assets_and_redacted_secrets() {
        let (lines, err, code) = plan_lines(
            &examples().join("../playbooks/contain-brute-force.yaml"),
            &examples().join("alerts/wazuh-sshd-brute-force.json"),
            Some(&examples().join("platform.yaml")),
        );
        assert_eq!(code, ExitCode::SUCCESS, "{err}");
        let block = lines
            .iter()
            .find(|l| l["type"] == "wazuh-active-response")
            .expect("a wazuh step");
        assert_eq!(block["approval_required"], true);
        assert!(block["release"].is_object());
        // A secret is shown by name only.
        assert_eq!(
            block["inputs"]["config"]["password_secret"],
            "WAZUH_API_PASSWORD"
        );
        // The example platform protects the lab's Docker network and the manager's agent.
        assert_eq!(
            block["protected"],
            serde_json::json!(["address 172.17.1.1", "agent 000"])
        );
        let mail = lines.iter().find(|l| l["step"] == "mail-on-call").unwrap();
        assert_eq!(mail["condition"], false, "the alert is high, not critical");
        let task = lines.iter().find(|l| l["step"] == "follow-up").unwrap();
        assert_eq!(
            task["inputs"]["config"]["task"],
            "Check whether paco logged in from 172.17.1.1"
        );
    }

    #[test]
    fn every_example_playbook_is_valid_and_plans_against_its_alert() {
        for (playbook, alert) in [
            ("contain-brute-force.yaml", "wazuh-sshd-brute-force.json"),
            ("malware-c2.yaml", "suricata-high-severity.json"),
            ("quarantine-pod.yaml", "smb-admin-share-denied.json"),
        ] {
            let (lines, err, code) = plan_lines(
                &examples().join("../playbooks").join(playbook),
                &examples().join("alerts").join(alert),
                None,
            );
            assert_eq!(code, ExitCode::SUCCESS, "{playbook}: {err}");
            assert!(!lines.is_empty(), "{playbook}");
            assert!(
                lines.iter().all(|l| l["error"].is_null()),
                "{playbook}: {lines:?}"
            );
        }
    }

    #[test]
    fn a_file_of_several_alerts_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("two.jsonl");
        let one =
            std::fs::read_to_string(examples().join("alerts/wazuh-sshd-brute-force.json")).unwrap();
        let one_line: serde_json::Value = serde_json::from_str(&one).unwrap();
        std::fs::write(&file, format!("{one_line}\n{one_line}\n")).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let error = test(
            &examples().join("playbook.yaml"),
            &file,
            None,
            1,
            &mut out,
            &mut err,
        )
        .unwrap_err();
        assert!(error.to_string().contains("2 lines"), "{error}");
    }
}
