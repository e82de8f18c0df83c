//! What a feed's spec asks of the loader beyond reading it: the TLP ceiling (on the real
//! TweetFeed MISP feed, one event re-marked), the refresher's status and gauges for it,
//! and the refusals of content that is not a feed (random bytes, prose, an ftp:// URL).

mod support;

use std::path::Path;
use std::time::Duration;

use kastell_core::ObservableKind;
use kastell_crds::intel::{FeedKind, IntelFeedSpec};
use kastell_enrich::feed::{self, FeedDef, FeedError};
use kastell_enrich::http::Http;
use kastell_enrich::metrics::IntelMetrics;
use kastell_enrich::refresh::Refresher;
use serde_json::{json, Value};

/// The TweetFeed event re-marked in these tests: 17 attributes, all `to_ids`, of
/// supported types and distinct, so 17 indicators; the feed's five events give 473.
const REMARKED: &str = "181b5be4-a1f6-53a4-8436-4d4cd3e272a3";

fn http() -> Http {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Http::new(None, Duration::from_secs(10)).unwrap()
}

fn def(spec: Value, base: &Path) -> FeedDef {
    let spec: IntelFeedSpec = serde_json::from_value(spec).unwrap();
    FeedDef::new("tweetfeed", spec, base)
}

/// The TweetFeed sample copied to `dir`, the event [`REMARKED`] marked `tlp:amber`
/// instead of `tlp:clear` (in the event file and the manifest, as MISP writes both).
fn remarked_tweetfeed(dir: &Path) -> String {
    let source = support::tweetfeed_feed();
    let mut remarked_value = String::new();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if name == format!("{REMARKED}.json") {
            assert_eq!(text.matches("tlp:clear").count(), 1, "one event tag");
            text = text.replace("tlp:clear", "tlp:amber");
            let event: Value = serde_json::from_str(&text).unwrap();
            remarked_value = event["Event"]["Attribute"][0]["value"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        if name == "manifest.json" {
            let mut manifest: Value = serde_json::from_str(&text).unwrap();
            for tag in manifest[REMARKED]["Tag"].as_array_mut().unwrap() {
                if tag["name"] == json!("tlp:clear") {
                    tag["name"] = json!("tlp:amber");
                }
            }
            text = manifest.to_string();
        }
        std::fs::write(dir.join(&name), text).unwrap();
    }
    remarked_value
}

#[tokio::test]
async fn indicators_above_the_tlp_ceiling_are_not_loaded_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let amber_value = remarked_tweetfeed(dir.path());
    let path = dir.path().to_str().unwrap();

    let green = def(
        json!({"type": "misp-feed", "path": path, "tlpCeiling": "green"}),
        dir.path(),
    );
    let loaded = feed::load(&green, &http()).await.unwrap();
    assert_eq!(loaded.above_tlp_ceiling, 17);
    assert_eq!(loaded.skipped.get("above tlp ceiling"), Some(&17));
    assert_eq!(loaded.store.len(), 473 - 17);
    assert!(loaded
        .store
        .lookup_value(ObservableKind::Domain, &amber_value)
        .is_empty());
    assert!(loaded
        .store
        .indicators()
        .all(|i| i.context.reference.as_deref() != Some(REMARKED)));
    // The rest of the feed, marked tlp:clear, is all there.
    assert!(loaded
        .store
        .contains(ObservableKind::Domain, "mu-hiqwnkesad.com"));

    for (ceiling, held) in [("amber", 473), ("red", 473), ("clear", 473 - 17)] {
        let spec = json!({"type": "misp-feed", "path": path, "tlpCeiling": ceiling});
        let loaded = feed::load(&def(spec, dir.path()), &http()).await.unwrap();
        assert_eq!(loaded.store.len(), held, "ceiling {ceiling}");
    }
    let unlimited = def(json!({"type": "misp-feed", "path": path}), dir.path());
    let loaded = feed::load(&unlimited, &http()).await.unwrap();
    assert_eq!((loaded.store.len(), loaded.above_tlp_ceiling), (473, 0));
}

#[tokio::test]
async fn the_refresher_reports_the_ceiling_in_status_and_gauges() {
    let dir = tempfile::tempdir().unwrap();
    remarked_tweetfeed(dir.path());
    let spec = json!({
        "type": "misp-feed", "path": dir.path().to_str().unwrap(), "tlpCeiling": "green",
        "refreshInterval": "1h",
    });
    let registry = prometheus::Registry::new();
    let metrics = IntelMetrics::register_in(&registry).unwrap();
    let mut refresher = Refresher::new(vec![def(spec, dir.path())], http()).with_metrics(metrics);
    assert_eq!(refresher.refresh_due().await, 1);
    let status = &refresher.feeds()[0].status;
    assert_eq!(status.indicator_count, Some(456));
    assert_eq!(status.above_tlp_ceiling, Some(17));
    let text = render(&registry);
    assert!(
        text.contains("kastell_enrich_indicators{feed=\"tweetfeed\"} 456"),
        "{text}"
    );
    assert!(
        text.contains("kastell_enrich_indicators_above_tlp_ceiling{feed=\"tweetfeed\"} 17"),
        "{text}"
    );
    assert_eq!(refresher.current().load().len(), 456);
}

fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Bytes of a xorshift generator: reproducible, and as far from text as /dev/urandom.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[5]
        })
        .collect()
}

#[tokio::test]
async fn random_bytes_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.bin");
    std::fs::write(&path, random_bytes(64 * 1024)).unwrap();
    for kind in ["plain-list", "csv"] {
        let spec = json!({"type": kind, "path": path.to_str().unwrap()});
        let error = feed::load(&def(spec, dir.path()), &http())
            .await
            .unwrap_err();
        assert!(matches!(error, FeedError::NotText(_)), "{kind}: {error}");
        assert_eq!(
            error.to_string(),
            format!(
                "{} is not a text feed (binary content: NUL or control bytes, or not UTF-8)",
                path.display()
            )
        );
    }
    // Random bytes without a NUL are refused too (for the share of odd characters).
    let no_nul: Vec<u8> = random_bytes(64 * 1024)
        .into_iter()
        .map(|b| b.max(1))
        .collect();
    std::fs::write(&path, no_nul).unwrap();
    let spec = json!({"type": "plain-list", "path": path.to_str().unwrap()});
    let error = feed::load(&def(spec, dir.path()), &http())
        .await
        .unwrap_err();
    assert!(matches!(error, FeedError::NotText(_)), "{error}");
}

#[tokio::test]
async fn text_without_a_single_indicator_is_refused() {
    // The BSD licence of the TAXII fixture: prose, no address, name, URL or hash in it.
    let licence = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taxii/LICENSE");
    let spec = json!({"type": "plain-list", "path": licence.to_str().unwrap()});
    let error = feed::load(&def(spec, Path::new(".")), &http())
        .await
        .unwrap_err();
    match &error {
        FeedError::NoIndicators {
            source_name,
            entries,
            kind,
        } => {
            assert_eq!(source_name, &licence.display().to_string());
            assert!(*entries > 100, "{entries}");
            assert_eq!(*kind, FeedKind::PlainList);
        }
        other => panic!("{other}"),
    }
    // A list of comments only is an empty feed, not an error.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing listed today\n\n").unwrap();
    let spec = json!({"type": "plain-list", "path": empty.to_str().unwrap()});
    let loaded = feed::load(&def(spec, dir.path()), &http()).await.unwrap();
    assert!(loaded.store.is_empty());
}

#[tokio::test]
async fn an_ftp_url_is_an_unsupported_scheme() {
    let spec = json!({"type": "plain-list", "url": "ftp://feeds.example.eu/list.txt"});
    let error = feed::load(&def(spec, Path::new(".")), &http())
        .await
        .unwrap_err();
    assert_eq!(
        kastell_core::error_chain(&error),
        "ftp://feeds.example.eu/list.txt: unsupported URL scheme ftp: use https, http \
         (loopback only) or a path"
    );
}
