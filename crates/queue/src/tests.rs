use super::*;
use portcullis_types::{Address, BodyType, Notify, Recipient, ReversePath};

fn envelope(n: u64) -> Envelope {
    Envelope {
        id: QueueId::generate(1_700_000_000_000 + n, 0),
        sender: ReversePath::parse("a@example.test").unwrap(),
        recipients: vec![Recipient {
            address: Address::parse("b@example.test").unwrap(),
            notify: Notify::default(),
            orcpt: None,
        }],
        ret: None,
        envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        received_at: 1_700_000_000,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.test".into(),
        tls: None,
        authenticated: None,
        size: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_list_read_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let q = Queue::open(&store).unwrap();
    let big: Vec<u8> = (0..(MAX_VALUE * 2 + 17)).map(|i| (i % 251) as u8).collect();
    let e = envelope(1);
    q.enqueue(e.clone(), &big).await.unwrap();
    q.enqueue(envelope(2), b"small\r\n").await.unwrap();
    assert_eq!(q.len(), 2);
    let list = q.list().unwrap();
    assert_eq!(list[0].envelope, e);
    assert_eq!(list[0].recipients[0].status, RecipientStatus::Queued);
    assert_eq!(q.message(e.id).unwrap(), big);
    q.remove(e.id).await.unwrap();
    assert_eq!(q.len(), 1);
    assert!(matches!(q.message(e.id), Err(QueueError::NotFound(_))));
    assert!(matches!(q.remove(e.id).await, Err(QueueError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_bodies_are_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let kept = envelope(1);
    let orphan = envelope(9).id.to_bytes();
    {
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        q.enqueue(kept.clone(), b"kept\r\n").await.unwrap();
        // A body written without its record: what a crash mid-enqueue leaves.
        let bodies = store.tree(TreeName::QueueBodies).unwrap();
        bodies
            .insert(body_key(orphan, 0), b"orphan".to_vec())
            .unwrap();
        bodies
            .insert(body_key(orphan, 1), b"orphan".to_vec())
            .unwrap();
        store.flush_now().unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let store = Store::open(dir.path()).unwrap();
    let q = Queue::open(&store).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(store.tree(TreeName::QueueBodies).unwrap().len(), 1);
    assert_eq!(q.message(kept.id).unwrap(), b"kept\r\n");
}
