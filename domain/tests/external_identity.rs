//! Binding identity-provider accounts (`iss` + `sub`) to roster people, on SQLite (always) and
//! PostgreSQL (when CLASSROOM_TEST_POSTGRES_URL is set). Sample roster: g-001 is
//! g.nakagawa@home.example.jp, g-002 g.hayashi@home.example.jp.

mod common;

use classroom_domain as domain;
use classroom_domain::{
    ExternalAccount, ExternalSignIn, ExternalSignInError, Table, import_dir, sign_in_external,
};
use common::{backends, exec, fixture_dir};

const ISS: &str = "https://idp.example";

fn account<'a>(subject: &'a str, email: Option<&'a str>) -> ExternalAccount<'a> {
    ExternalAccount {
        issuer: ISS,
        subject,
        trusted_email: email,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_bound_once_and_found_by_subject() {
    for t in backends("external_identity").await {
        let db = &t.db;
        import_dir(db, &fixture_dir()).await.unwrap();

        // No trusted address and no binding: nobody.
        let err = sign_in_external(db, &account("sub-1", None), 100)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExternalSignInError::UntrustedEmail),
            "{err:?}"
        );
        let err = sign_in_external(db, &account("sub-1", Some("nobody@example.jp")), 100)
            .await
            .unwrap_err();
        assert!(matches!(err, ExternalSignInError::NoAccount), "{err:?}");

        // First sign-in: by address (any case), bound.
        let first = sign_in_external(
            db,
            &account("sub-1", Some("G.Nakagawa@home.example.jp")),
            100,
        )
        .await
        .unwrap();
        assert!(
            matches!(&first, ExternalSignIn::NewlyBound(p) if p.id == "g-001"),
            "{first:?}"
        );
        // Later: by subject alone, whatever the address says now, or if it says nothing.
        for email in [
            None,
            Some("new-address@example.jp"),
            Some("g.hayashi@home.example.jp"),
        ] {
            let again = sign_in_external(db, &account("sub-1", email), 200)
                .await
                .unwrap();
            assert!(
                matches!(&again, ExternalSignIn::Known(p) if p.id == "g-001"),
                "{email:?}: {again:?}"
            );
        }
        // Another account claiming g-001's address does not become g-001.
        let err = sign_in_external(
            db,
            &account("sub-2", Some("g.nakagawa@home.example.jp")),
            300,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, ExternalSignInError::BoundToAnother),
            "{err:?}"
        );
        // The same subject at another issuer is another account.
        let other_issuer = ExternalAccount {
            issuer: "https://other-idp.example",
            ..account("sub-1", Some("g.hayashi@home.example.jp"))
        };
        let other = sign_in_external(db, &other_issuer, 300).await.unwrap();
        assert!(
            matches!(&other, ExternalSignIn::NewlyBound(p) if p.id == "g-002"),
            "{other:?}"
        );
        assert_eq!(db.count(Table::ExternalIdentities).await.unwrap(), 2);

        // Disabling the person in the roster ends their account's sign-ins too.
        exec(db, "UPDATE people SET enabled = FALSE WHERE id = 'g-001'").await;
        let err = sign_in_external(db, &account("sub-1", None), 400)
            .await
            .unwrap_err();
        assert!(matches!(err, ExternalSignInError::Disabled), "{err:?}");
        exec(db, "UPDATE people SET enabled = TRUE WHERE id = 'g-001'").await;

        // Unbinding lets the person bind a new account (a lost one replaced) by address again.
        assert_eq!(domain::unbind_person(db, "g-001").await.unwrap(), 1);
        let rebound = sign_in_external(
            db,
            &account("sub-3", Some("g.nakagawa@home.example.jp")),
            500,
        )
        .await
        .unwrap();
        assert!(matches!(&rebound, ExternalSignIn::NewlyBound(p) if p.id == "g-001"));
        assert_eq!(domain::bound_person(db, ISS, "sub-1").await.unwrap(), None);
        t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ins_bind_one_account() {
    for t in backends("external_identity_race").await {
        let db = &t.db;
        import_dir(db, &fixture_dir()).await.unwrap();
        // Eight different accounts with g-001's address at once: exactly one gets g-001.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let subject = format!("racer-{i}");
                    sign_in_external(
                        &db,
                        &account(&subject, Some("g.nakagawa@home.example.jp")),
                        100,
                    )
                    .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(signed_in) => {
                    assert_eq!(signed_in.person().id, "g-001");
                    won += 1;
                }
                Err(ExternalSignInError::BoundToAnother) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(db.count(Table::ExternalIdentities).await.unwrap(), 1);
        t.finish().await;
    }
}
