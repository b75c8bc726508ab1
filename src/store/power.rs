//! Power cuts: the store runs on a disk that keeps only what was synced
//! (and, of the rest, any subset of the writes, the last one possibly
//! torn), for the database and the journal alike. Over many random cut
//! points, every acknowledged write must survive and the store must open.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{ReadableTable, StorageBackend};
use tokio::sync::Notify;

use super::test_tables::{COUNTS, ROWS};
use super::*;

/// A small deterministic generator: a failing seed can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The power of the machine: it goes off after a number of writes and syncs.
#[derive(Debug)]
struct Power {
    on: AtomicBool,
    ops_left: AtomicI64,
}

impl Power {
    fn new(ops: i64) -> Arc<Power> {
        Arc::new(Power {
            on: AtomicBool::new(true),
            ops_left: AtomicI64::new(ops),
        })
    }

    /// Counts one operation; false once the power is off.
    fn tick(&self) -> bool {
        if self.ops_left.fetch_sub(1, Ordering::SeqCst) <= 1 {
            self.on.store(false, Ordering::SeqCst);
        }
        self.on.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Platter {
    /// What survives a power cut for sure.
    synced: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Writes since the last sync, in order.
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
struct Disk {
    platter: Arc<Mutex<Platter>>,
    power: Arc<Power>,
}

fn cut() -> io::Error {
    io::Error::other("the power is off")
}

impl Disk {
    fn new(power: Arc<Power>) -> Disk {
        Disk {
            platter: Arc::default(),
            power,
        }
    }

    /// The disk as found after the power comes back: the synced bytes, then
    /// any subset of the later writes in order, the last kept one maybe torn
    /// at a 512-byte sector.
    fn reboot(&self, rng: &mut Rng, power: Arc<Power>) -> Disk {
        let p = self.platter.lock().unwrap();
        let mut image = p.synced.clone();
        let kept: Vec<&Pending> = p.pending.iter().filter(|_| rng.below(2) == 0).collect();
        let tear = rng.below(2) == 0;
        for (i, w) in kept.iter().enumerate() {
            match w {
                Pending::SetLen(len) => image.resize(*len as usize, 0),
                Pending::Write(at, data) => {
                    let mut data = &data[..];
                    if tear && i + 1 == kept.len() {
                        let sectors = data.len().div_ceil(512) as u64;
                        data = &data[..((rng.below(sectors) * 512) as usize).min(data.len())];
                    }
                    let end = *at as usize + data.len();
                    if image.len() < end {
                        image.resize(end, 0);
                    }
                    image[*at as usize..end].copy_from_slice(data);
                }
            }
        }
        Disk {
            platter: Arc::new(Mutex::new(Platter {
                synced: image.clone(),
                current: image,
                pending: Vec::new(),
            })),
            power,
        }
    }
}

impl StorageBackend for Disk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.platter.lock().unwrap().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let p = self.platter.lock().unwrap();
        let src = p
            .current
            .get(offset as usize..offset as usize + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.power.tick() {
            return Err(cut());
        }
        let mut p = self.platter.lock().unwrap();
        p.current.resize(len as usize, 0);
        p.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if !self.power.tick() {
            return Err(cut());
        }
        let mut p = self.platter.lock().unwrap();
        p.synced = p.current.clone();
        p.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.power.tick() {
            return Err(cut());
        }
        let mut p = self.platter.lock().unwrap();
        let end = offset as usize + data.len();
        if p.current.len() < end {
            p.current.resize(end, 0);
        }
        p.current[offset as usize..end].copy_from_slice(data);
        p.pending.push(Pending::Write(offset, data.to_vec()));
        Ok(())
    }
}

fn open_on_disks(dir: &Path, db: &Disk, journal: &Disk) -> Result<(Store, WriterGuard), OpenError> {
    let (db, journal) = (db.clone(), journal.clone());
    let media = Media::Given(Arc::new(move || {
        (
            Box::new(db.clone()) as Box<dyn StorageBackend>,
            Box::new(journal.clone()) as Box<dyn StorageBackend>,
        )
    }));
    let opts = Options {
        cache_size: 1 << 20,
        max_size: 1 << 30,
        // Small, so that runs cross checkpoints and journal restarts.
        journal_bytes: 24 << 10,
        checkpoint_every: Duration::from_millis(15),
        tables: Arc::new(super::test_tables::all()),
    };
    Store::open_on(dir, media, opts, Arc::new(Metrics::new()), Arc::new(Notify::new()))
}

/// One run: writers publish numbered rows (each with the counter that
/// numbers them, in one commit) and a progress writer moves a cursor, until
/// the power goes. Returns the acknowledged rows.
fn workload(store: &Store, rounds: u64) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut acked = Vec::new();
        for round in 0..rounds {
            let publish = |i: u64| {
                let store = store.clone();
                async move {
                    store
                        .write(Grows::Yes, move |txn| {
                            let n = txn.next_id("rows")?;
                            let body = format!("row {n} {}", "x".repeat((i * 37 % 300) as usize));
                            txn.open(ROWS)?.insert(n, body.as_bytes())?;
                            Ok(n)
                        })
                        .await
                }
            };
            let progress = store.write_progress(Grows::No, move |txn| {
                txn.open(COUNTS)?.insert("cursor", round)?;
                Ok(())
            });
            let (a, b, c, p) = tokio::join!(publish(round), publish(round + 1), publish(round + 2), progress);
            let mut failed = p.is_err();
            for r in [a, b, c] {
                match r {
                    Ok(n) => acked.push(n),
                    Err(_) => failed = true,
                }
            }
            if failed {
                break;
            }
            if round % 7 == 0 {
                // Let a checkpoint or a lazy sync come due.
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
        acked
    })
}

/// What was found after the power came back: every row, and the counter.
fn rows(store: &Store) -> (Vec<(u64, String)>, u64) {
    store
        .read(|r| {
            let rows = r
                .open_table(ROWS)?
                .iter()?
                .map(|row| {
                    let (k, v) = row.unwrap();
                    (k.value(), String::from_utf8(v.value().to_vec()).unwrap())
                })
                .collect();
            let next = r.open_table(META)?.get("rows")?.map_or(1, |v| v.value());
            Ok((rows, next))
        })
        .unwrap()
}

#[test]
fn every_acknowledged_write_survives_power_cuts_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    const ROUNDS: u64 = 60;
    // How many writes and syncs a whole run makes, to place the cuts in.
    let (total_ops, open_ops) = {
        let power = Power::new(i64::MAX);
        let (db, journal) = (Disk::new(power.clone()), Disk::new(power.clone()));
        let (store, guard) = open_on_disks(dir.path(), &db, &journal).unwrap();
        let opened = i64::MAX - power.ops_left.load(Ordering::SeqCst);
        assert_eq!(workload(&store, ROUNDS).len() as u64, 3 * ROUNDS);
        drop(store);
        guard.close(Duration::from_secs(5));
        (i64::MAX - power.ops_left.load(Ordering::SeqCst), opened)
    };
    let mut replayed_runs = 0;
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let cut_at = open_ops + 1 + rng.below((total_ops - open_ops) as u64) as i64;
        let power = Power::new(cut_at);
        let (db, journal) = (Disk::new(power.clone()), Disk::new(power.clone()));
        let (store, guard) = open_on_disks(dir.path(), &db, &journal).unwrap();
        let acked = workload(&store, ROUNDS);
        drop(store);
        guard.close(Duration::from_secs(5));

        let power = Power::new(i64::MAX);
        let (db, journal) = (db.reboot(&mut rng, power.clone()), journal.reboot(&mut rng, power));
        let (store, guard) = open_on_disks(dir.path(), &db, &journal)
            .unwrap_or_else(|e| panic!("seed {seed}: the store does not open after the cut: {e}"));
        let (found, next) = rows(&store);
        let keys: Vec<u64> = found.iter().map(|(k, _)| *k).collect();
        // Each commit added its rows with the counter: what is found is a
        // whole prefix of the commits, never a part of one.
        assert_eq!(
            keys,
            (1..next).collect::<Vec<_>>(),
            "seed {seed}: rows and counter disagree"
        );
        for (k, body) in &found {
            assert!(
                body.starts_with(&format!("row {k} ")),
                "seed {seed}: row {k} is {body:?}"
            );
        }
        for n in &acked {
            assert!(
                keys.contains(n),
                "seed {seed}: acknowledged row {n} lost (cut at op {cut_at})"
            );
        }
        if next > 1 + acked.len() as u64 {
            replayed_runs += 1;
        }
        // And it takes work again.
        assert_eq!(workload(&store, 2).len(), 6, "seed {seed}: no work after the cut");
        drop(store);
        guard.close(Duration::from_secs(5));
    }
    eprintln!("{replayed_runs} of 150 runs kept writes that were not yet acknowledged");
}
