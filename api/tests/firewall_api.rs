//! apid's firewall endpoints over real HTTPS inside a fresh network
//! namespace (server, client and the nf_tables ruleset all there): rules
//! created, moved, changed and deleted with Proxmox's `pos`, `moveto`,
//! `digest` and `delete`; an unknown alias refused with the file and the
//! kernel's ruleset unchanged; options and aliases; and the ruleset read
//! back from the kernel with `nft -j list ruleset`.
//!
//! Needs root and nftables (`nft`); skipped with a message otherwise,
//! except under `make test` (`OXBOW_NO_SKIP`).

use netns_fixture::{is_root, Netns};
use reqwest::{Method, StatusCode};

mod common;

use common::{write_root_password, RunningServer, Session, PASSWORD};

fn skip() -> bool {
    let missing = if !is_root() {
        Some("needs root")
    } else if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("needs nft (nftables)")
    } else {
        None
    };
    let Some(why) = missing else { return false };
    assert!(
        std::env::var_os("OXBOW_NO_SKIP").is_none(),
        "firewall_api {why}"
    );
    eprintln!("skipped: {why}");
    true
}

fn ruleset(ns: &Netns) -> String {
    ns.exec("nft", &["list", "ruleset"])
}

#[test]
fn firewall_rules_are_edited_validated_and_applied() {
    if skip() {
        return;
    }
    let ns = Netns::new("apid-fw");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    write_root_password(&state, PASSWORD);
    let cluster_fw = state.join("firewall/cluster.fw");
    // A guest with an alias and an IP set of its own.
    std::fs::create_dir_all(state.join("qemu-server")).unwrap();
    std::fs::write(state.join("qemu-server/101.conf"), "memory: 512\n").unwrap();
    std::fs::create_dir_all(state.join("firewall")).unwrap();
    std::fs::write(
        state.join("firewall/101.fw"),
        "[ALIASES]\n\nlocal0 192.0.2.0/24 # lab net\n\n[IPSET lab]\n\n192.0.2.5\n",
    )
    .unwrap();
    let ns_ref = &ns;
    ns.enter(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let server = RunningServer::start(&state).await;
                let s = Session::new(&server, "root@pam", PASSWORD).await;
                let rules = "/cluster/firewall/rules";

                // Enable the firewall, then add three rules (form bodies).
                let (status, body) = s
                    .form(
                        &server,
                        Method::PUT,
                        "/cluster/firewall/options",
                        &[("enable", "1"), ("policy_in", "DROP")],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                for (dport, comment) in [("80", "web"), ("443", "tls"), ("25", "mail")] {
                    let (status, body) = s
                        .form(
                            &server,
                            Method::POST,
                            rules,
                            &[
                                ("type", "in"),
                                ("action", "ACCEPT"),
                                ("proto", "tcp"),
                                ("dport", dport),
                                ("enable", "1"),
                                ("comment", comment),
                                ("pos", "99"),
                            ],
                        )
                        .await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
                let (_, list) = s.get(&server, rules).await;
                let list = list["data"].as_array().unwrap().clone();
                let ports: Vec<&str> = list.iter().map(|r| r["dport"].as_str().unwrap()).collect();
                assert_eq!(ports, ["80", "443", "25"]);
                assert_eq!(list[0]["pos"], 0);
                assert_eq!(list[0]["type"], "in");
                assert_eq!(list[0]["enable"], 1);
                assert_eq!(list[1]["comment"], "tls");
                let digest = list[0]["digest"].as_str().unwrap().to_owned();

                // moveto: the mail rule first.
                let (status, body) = s
                    .form(
                        &server,
                        Method::PUT,
                        &format!("{rules}/2"),
                        &[("moveto", "0"), ("digest", &digest)],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, one) = s.get(&server, &format!("{rules}/0")).await;
                assert_eq!(one["data"]["dport"], "25");
                // The old digest is stale now.
                let (status, _) = s
                    .form(
                        &server,
                        Method::DELETE,
                        &format!("{rules}/0"),
                        &[("digest", &digest)],
                    )
                    .await;
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                // Change a rule: a macro, no port, no comment, disabled.
                let (status, body) = s
                    .form(
                        &server,
                        Method::PUT,
                        &format!("{rules}/0"),
                        &[
                            ("macro", "SMTP"),
                            ("delete", "dport,proto,comment"),
                            ("enable", "0"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let text = std::fs::read_to_string(&cluster_fw).unwrap();
                assert!(text.contains("|IN SMTP(ACCEPT)\n"), "{text}");
                assert!(
                    text.contains("IN ACCEPT -p tcp -dport 80 # web\n"),
                    "{text}"
                );

                // The kernel has the ruleset.
                let before = ruleset(ns_ref);
                assert!(before.contains("table inet oxbow"), "{before}");
                assert!(
                    before.contains("tcp dport 443 accept")
                        || before.contains("th dport 443 accept"),
                    "{before}"
                );

                // A rule naming an unknown alias: 400, nothing changes.
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        rules,
                        &[
                            ("type", "in"),
                            ("action", "DROP"),
                            ("source", "nosuchalias"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
                assert!(
                    body["errors"]["firewall"]
                        .as_str()
                        .unwrap()
                        .contains("nosuchalias"),
                    "{body}"
                );
                assert_eq!(std::fs::read_to_string(&cluster_fw).unwrap(), text);
                assert_eq!(ruleset(ns_ref), before);

                // With the alias defined, the same rule goes in.
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        "/cluster/firewall/aliases",
                        &[
                            ("name", "office"),
                            ("cidr", "198.51.100.0/24"),
                            ("comment", "HQ"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, alias) = s.get(&server, "/cluster/firewall/aliases/office").await;
                assert_eq!(alias["data"]["cidr"], "198.51.100.0/24");
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        rules,
                        &[
                            ("type", "in"),
                            ("action", "DROP"),
                            ("source", "office"),
                            ("enable", "1"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let after = ruleset(ns_ref);
                assert!(
                    after.contains("ip saddr 198.51.100.0-198.51.100.255 drop")
                        || after.contains("ip saddr 198.51.100.0/24 drop"),
                    "{after}"
                );
                // An alias in use cannot be removed.
                let (status, _) = s
                    .form(
                        &server,
                        Method::DELETE,
                        "/cluster/firewall/aliases/office",
                        &[],
                    )
                    .await;
                assert_eq!(status, StatusCode::BAD_REQUEST);

                // IP sets: created, filled (a network, an excluded address),
                // read back by entry (the CIDR percent-encoded in the path),
                // used by a rule, and protected while in use.
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        "/cluster/firewall/ipset",
                        &[("name", "blocked"), ("comment", "bad hosts")],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                for (cidr, nomatch) in [("203.0.113.0/24", "0"), ("203.0.113.7", "1")] {
                    let (status, body) = s
                        .form(
                            &server,
                            Method::POST,
                            "/cluster/firewall/ipset/blocked",
                            &[("cidr", cidr), ("nomatch", nomatch)],
                        )
                        .await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        "/cluster/firewall/ipset/blocked",
                        &[("cidr", "not-an-address")],
                    )
                    .await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
                let (_, sets) = s.get(&server, "/cluster/firewall/ipset").await;
                assert_eq!(sets["data"][0]["name"], "blocked");
                assert_eq!(sets["data"][0]["comment"], "bad hosts");
                // What a rule may name, for the rule editor: the set and
                // the alias with their scoped references.
                let (status, refs) = s.get(&server, "/cluster/firewall/refs").await;
                assert_eq!(status, StatusCode::OK, "{refs}");
                assert_eq!(
                    refs["data"],
                    serde_json::json!([
                        {"type": "ipset", "name": "blocked", "ref": "+dc/blocked", "scope": "dc", "comment": "bad hosts"},
                        {"type": "alias", "name": "office", "ref": "dc/office", "scope": "dc", "comment": "HQ"},
                    ])
                );
                let (_, aliases) = s.get(&server, "/cluster/firewall/refs?type=alias").await;
                assert_eq!(aliases["data"].as_array().map(Vec::len), Some(1), "{aliases}");
                assert_eq!(aliases["data"][0]["ref"], "dc/office");
                let (status, _) = s.get(&server, "/cluster/firewall/refs?type=group").await;
                assert_eq!(status, StatusCode::BAD_REQUEST);
                // A guest's: the cluster's, then its own.
                let (status, refs) = s
                    .get(
                        &server,
                        &format!("/nodes/{}/qemu/101/firewall/refs", common::NODE),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{refs}");
                let got: Vec<(&str, &str)> = refs["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["ref"].as_str().unwrap(), r["scope"].as_str().unwrap()))
                    .collect();
                assert_eq!(
                    got,
                    [
                        ("+dc/blocked", "dc"),
                        ("dc/office", "dc"),
                        ("+guest/lab", "guest"),
                        ("guest/local0", "guest")
                    ]
                );
                assert_eq!(refs["data"][3]["comment"], "lab net");
                let (_, entries) = s.get(&server, "/cluster/firewall/ipset/blocked").await;
                assert_eq!(entries["data"][0]["cidr"], "203.0.113.0/24");
                assert_eq!(entries["data"][1]["cidr"], "203.0.113.7");
                assert_eq!(entries["data"][1]["nomatch"], 1);
                let entry = "/cluster/firewall/ipset/blocked/203.0.113.0%2F24";
                let (status, body) = s
                    .form(&server, Method::PUT, entry, &[("comment", "TEST-NET-3")])
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, one) = s.get(&server, entry).await;
                assert_eq!(one["data"]["comment"], "TEST-NET-3");
                let text = std::fs::read_to_string(&cluster_fw).unwrap();
                assert!(
                    text.contains(
                        "[IPSET blocked] # bad hosts\n203.0.113.0/24 # TEST-NET-3\n!203.0.113.7\n"
                    ),
                    "{text}"
                );
                // A rule naming an unknown set is refused; the real one goes in.
                let (status, _) = s
                    .form(
                        &server,
                        Method::POST,
                        rules,
                        &[("type", "in"), ("action", "DROP"), ("source", "+nosuchset")],
                    )
                    .await;
                assert_eq!(status, StatusCode::BAD_REQUEST);
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        rules,
                        &[
                            ("type", "in"),
                            ("action", "DROP"),
                            ("source", "+blocked"),
                            ("enable", "1"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let after = ruleset(ns_ref);
                assert!(after.contains("203.0.113.0"), "{after}");
                // Not empty: refused without force; in use: refused even so.
                let (status, _) = s
                    .form(
                        &server,
                        Method::DELETE,
                        "/cluster/firewall/ipset/blocked",
                        &[],
                    )
                    .await;
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                let (status, _) = s
                    .form(
                        &server,
                        Method::DELETE,
                        "/cluster/firewall/ipset/blocked",
                        &[("force", "1")],
                    )
                    .await;
                assert_eq!(status, StatusCode::BAD_REQUEST);
                let (status, body) = s.form(&server, Method::DELETE, entry, &[]).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, entries) = s.get(&server, "/cluster/firewall/ipset/blocked").await;
                assert_eq!(entries["data"].as_array().unwrap().len(), 1);

                // Security groups and the host's rules.
                let (status, _) = s
                    .form(
                        &server,
                        Method::POST,
                        "/cluster/firewall/groups",
                        &[("group", "web"), ("comment", "www")],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK);
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        "/cluster/firewall/groups/web",
                        &[
                            ("type", "in"),
                            ("action", "ACCEPT"),
                            ("macro", "HTTP"),
                            ("enable", "1"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, groups) = s.get(&server, "/cluster/firewall/groups").await;
                assert_eq!(groups["data"][0]["group"], "web");
                assert_eq!(groups["data"][0]["comment"], "www");
                let host = format!("/nodes/{}/firewall/rules", common::NODE);
                let (status, body) = s
                    .form(
                        &server,
                        Method::POST,
                        &host,
                        &[("type", "group"), ("action", "web"), ("enable", "1")],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, host_rules) = s.get(&server, &host).await;
                assert_eq!(host_rules["data"][0]["type"], "group");
                assert_eq!(host_rules["data"][0]["action"], "web");
                let (status, _) = s
                    .form(
                        &server,
                        Method::DELETE,
                        "/cluster/firewall/groups/web/0",
                        &[],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK);
                let (status, _) = s
                    .form(&server, Method::DELETE, "/cluster/firewall/groups/web", &[])
                    .await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "the host still refers to it"
                );

                // Options read back; a guest that does not exist.
                let (_, options) = s.get(&server, "/cluster/firewall/options").await;
                assert_eq!(options["data"]["enable"], 1);
                assert_eq!(options["data"]["policy_in"], "DROP");
                for what in ["rules", "refs"] {
                    let path = format!("/nodes/{}/qemu/100/firewall/{what}", common::NODE);
                    let (status, _) = s.get(&server, &path).await;
                    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
                }

                // Switching the firewall off removes the tables.
                let (status, _) = s
                    .form(
                        &server,
                        Method::PUT,
                        "/cluster/firewall/options",
                        &[("enable", "0")],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK);
                assert!(!ruleset(ns_ref).contains("table inet oxbow"));
                server.stop().await;
            })
    });
}
