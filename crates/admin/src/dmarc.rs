//! The bodies of `dmarc list` and `dmarc send`: the DMARC aggregates not
//! yet reported and what a send pass did, mirroring the dmarc crate's
//! types so that `admin` depends on no business crate.

use serde::{Deserialize, Serialize};

/// One line of `portcullis dmarc list`: a (UTC day, From domain) with
/// aggregates not yet reported.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DmarcEntry {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The From (policy) domain.
    pub domain: String,
    /// Rows of the report (distinct source, disposition and results).
    pub rows: u32,
    /// Messages counted.
    pub messages: u64,
    /// The `rua` destinations as last published.
    pub rua: Vec<String>,
    /// `collecting` (the day is not over) or `pending`.
    pub state: String,
}

/// What `portcullis dmarc send` did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DmarcSendResult {
    /// One item per destination (or report) acted on; empty: nothing due.
    pub outcomes: Vec<DmarcOutcome>,
}

/// One outcome of a send pass.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DmarcOutcome {
    /// The UTC day.
    pub day: String,
    /// The policy domain.
    pub domain: String,
    /// `sent`, `skipped`, `failed` (tried again later) or `gave-up`.
    pub outcome: String,
    /// The destination, when the outcome is about one.
    pub to: Option<String>,
    /// The queue id (sent), or why not.
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Answer, Request};

    /// The CLI decodes what the server sends for each dmarc request.
    #[test]
    fn dmarc_answers_round_trip() {
        let list = vec![DmarcEntry {
            day: "2026-12-05".into(),
            domain: "a.test".into(),
            rows: 2,
            messages: 3,
            rua: vec!["mailto:d@a.test".into()],
            state: "pending".into(),
        }];
        let body = serde_json::to_value(Answer::DmarcList(list.clone())).unwrap();
        assert_eq!(
            Answer::decode(&Request::DmarcList, body).unwrap(),
            Answer::DmarcList(list)
        );
        let sent = DmarcSendResult {
            outcomes: vec![DmarcOutcome {
                day: "2026-12-05".into(),
                domain: "a.test".into(),
                outcome: "failed".into(),
                to: None,
                detail: Some("dns".into()),
            }],
        };
        let answer = Answer::decode(
            &Request::DmarcSend,
            serde_json::to_value(Answer::DmarcSend(sent.clone())).unwrap(),
        )
        .unwrap();
        assert!(!answer.all_succeeded());
        assert_eq!(answer, Answer::DmarcSend(sent));
    }
}
