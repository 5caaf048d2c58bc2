//! The tracking allocator: every tensor storage on a device is allocated through one
//! `Tracker`, which keeps current and peak bytes by category and by the layer (and phase)
//! that asked for it. The memory profiler reads these counters; they are exact (bytes of
//! element storage, counted once per storage however many tensors share it).
//!
//! Attribution comes from a thread-local context: `scope(layer, phase)` sets the layer and
//! phase that new allocations on this thread are charged to. A storage's category can be
//! changed after the fact (`Allocation::retag`), which is how an activation becomes
//! saved-for-backward when a layer decides to keep it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};

use serde::Serialize;

/// What a block of device memory is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Parameter = 0,
    Gradient = 1,
    OptimizerState = 2,
    SavedForBackward = 3,
    Workspace = 4,
    Data = 5,
}

pub const CATEGORIES: [Category; 6] = [
    Category::Parameter,
    Category::Gradient,
    Category::OptimizerState,
    Category::SavedForBackward,
    Category::Workspace,
    Category::Data,
];

impl Category {
    fn from_u8(v: u8) -> Category {
        CATEGORIES[v as usize]
    }
    pub fn name(self) -> &'static str {
        match self {
            Category::Parameter => "parameter",
            Category::Gradient => "gradient",
            Category::OptimizerState => "optimizer_state",
            Category::SavedForBackward => "saved_for_backward",
            Category::Workspace => "workspace",
            Category::Data => "data",
        }
    }
}

/// The part of a training step an allocation was made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Other,
    Forward,
    Backward,
    Optimizer,
}

/// One allocation or free, recorded when the tracker's timeline is on.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Sequence number (allocation events are totally ordered per tracker).
    pub seq: u64,
    /// Bytes added (positive) or released (negative); a retag is a pair of events.
    pub delta: i64,
    pub category: Category,
    pub layer: String,
    pub phase: Phase,
    /// Total bytes allocated on the device after this event.
    pub total: u64,
}

/// A copy of a tracker's counters at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Current bytes per category, indexed by `Category as usize`.
    pub current: [u64; 6],
    /// Peak bytes per category since the last `reset_peak`, each category's own peak.
    pub peak: [u64; 6],
    pub total: u64,
    pub peak_total: u64,
    /// Current bytes per (layer, category) with non-zero count.
    pub per_layer: Vec<(String, Category, u64)>,
    /// Peak bytes per (layer, category) since the last `reset_peak`.
    pub per_layer_peak: Vec<(String, Category, u64)>,
}

impl Snapshot {
    pub fn current(&self, c: Category) -> u64 {
        self.current[c as usize]
    }
    pub fn peak(&self, c: Category) -> u64 {
        self.peak[c as usize]
    }
}

#[derive(Default)]
struct State {
    current: [u64; 6],
    peak: [u64; 6],
    total: u64,
    peak_total: u64,
    per_layer: HashMap<(u32, u8), u64>,
    per_layer_peak: HashMap<(u32, u8), u64>,
    seq: u64,
    timeline: Option<Vec<Event>>,
}

/// Byte counters of one device.
pub struct Tracker {
    pub name: &'static str,
    state: Mutex<State>,
}

impl Tracker {
    fn new(name: &'static str) -> Self {
        Tracker {
            name,
            state: Mutex::new(State::default()),
        }
    }

    /// A tracker for a device found at run time (one per CUDA device), alive for the rest
    /// of the program.
    pub fn leaked(name: String) -> &'static Tracker {
        Box::leak(Box::new(Tracker::new(Box::leak(name.into_boxed_str()))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic while holding the lock leaves plain counters behind: still usable
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, bytes: u64, cat: u8, layer: u32, phase: Phase) {
        let mut s = self.lock();
        let c = cat as usize;
        s.current[c] += bytes;
        s.total += bytes;
        s.peak[c] = s.peak[c].max(s.current[c]);
        s.peak_total = s.peak_total.max(s.total);
        let e = s.per_layer.entry((layer, cat)).or_insert(0);
        *e += bytes;
        let now = *e;
        let p = s.per_layer_peak.entry((layer, cat)).or_insert(0);
        *p = (*p).max(now);
        s.seq += 1;
        let (seq, total) = (s.seq, s.total);
        if let Some(t) = s.timeline.as_mut() {
            t.push(Event {
                seq,
                delta: bytes as i64,
                category: Category::from_u8(cat),
                layer: layer_name(layer),
                phase,
                total,
            });
        }
    }

    fn sub(&self, bytes: u64, cat: u8, layer: u32, phase: Phase) {
        let mut s = self.lock();
        let c = cat as usize;
        s.current[c] -= bytes;
        s.total -= bytes;
        if let Some(e) = s.per_layer.get_mut(&(layer, cat)) {
            *e -= bytes;
            if *e == 0 {
                s.per_layer.remove(&(layer, cat));
            }
        }
        s.seq += 1;
        let (seq, total) = (s.seq, s.total);
        if let Some(t) = s.timeline.as_mut() {
            t.push(Event {
                seq,
                delta: -(bytes as i64),
                category: Category::from_u8(cat),
                layer: layer_name(layer),
                phase,
                total,
            });
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        let list = |m: &HashMap<(u32, u8), u64>| {
            let mut v: Vec<_> = m
                .iter()
                .filter(|(_, &b)| b > 0)
                .map(|(&(l, c), &b)| (layer_name(l), Category::from_u8(c), b))
                .collect();
            v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            v
        };
        Snapshot {
            current: s.current,
            peak: s.peak,
            total: s.total,
            peak_total: s.peak_total,
            per_layer: list(&s.per_layer),
            per_layer_peak: list(&s.per_layer_peak),
        }
    }

    /// Current bytes of one category.
    pub fn current(&self, c: Category) -> u64 {
        self.lock().current[c as usize]
    }

    /// Total bytes currently allocated.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Set every peak to the current value.
    pub fn reset_peak(&self) {
        let mut s = self.lock();
        s.peak = s.current;
        s.peak_total = s.total;
        s.per_layer_peak = s.per_layer.clone();
    }

    /// Start recording every allocation and free (clears an earlier recording).
    pub fn start_timeline(&self) {
        self.lock().timeline = Some(Vec::new());
    }

    /// Stop recording and return the events since `start_timeline`.
    pub fn take_timeline(&self) -> Vec<Event> {
        self.lock().timeline.take().unwrap_or_default()
    }
}

static CPU_TRACKER: LazyLock<Tracker> = LazyLock::new(|| Tracker::new("cpu"));
static EMU_TRACKER: LazyLock<Tracker> = LazyLock::new(|| Tracker::new("emu"));

/// The tracker of the host (CPU) device.
pub fn cpu_tracker() -> &'static Tracker {
    &CPU_TRACKER
}

/// The tracker of the CUDA emulator device.
pub fn emu_tracker() -> &'static Tracker {
    &EMU_TRACKER
}

// ---- layer names -------------------------------------------------------------------------

/// Interned layer names: id → name, and name → id.
type LayerTable = (Vec<String>, HashMap<String, u32>);

static LAYERS: OnceLock<Mutex<LayerTable>> = OnceLock::new();

fn layers() -> &'static Mutex<LayerTable> {
    LAYERS.get_or_init(|| Mutex::new((vec![String::new()], HashMap::new())))
}

/// Intern a layer name; id 0 is the empty name (allocations outside any layer).
pub fn layer_id(name: &str) -> u32 {
    if name.is_empty() {
        return 0;
    }
    let mut l = layers().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&id) = l.1.get(name) {
        return id;
    }
    let id = l.0.len() as u32;
    l.0.push(name.to_string());
    l.1.insert(name.to_string(), id);
    id
}

pub fn layer_name(id: u32) -> String {
    let l = layers().lock().unwrap_or_else(|e| e.into_inner());
    l.0.get(id as usize).cloned().unwrap_or_default()
}

// ---- thread-local attribution --------------------------------------------------------------

thread_local! {
    static CTX_LAYER: Cell<u32> = const { Cell::new(0) };
    static CTX_PHASE: Cell<Phase> = const { Cell::new(Phase::Other) };
}

/// Restores the previous attribution context when dropped.
pub struct ScopeGuard {
    layer: u32,
    phase: Phase,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        CTX_LAYER.with(|c| c.set(self.layer));
        CTX_PHASE.with(|c| c.set(self.phase));
    }
}

/// Charge allocations made on this thread to `layer` (an interned id) until the guard drops.
pub fn scope_layer(layer: u32) -> ScopeGuard {
    let g = ScopeGuard {
        layer: CTX_LAYER.with(|c| c.get()),
        phase: CTX_PHASE.with(|c| c.get()),
    };
    CTX_LAYER.with(|c| c.set(layer));
    g
}

/// Charge allocations made on this thread to `phase` until the guard drops.
pub fn scope_phase(phase: Phase) -> ScopeGuard {
    let g = ScopeGuard {
        layer: CTX_LAYER.with(|c| c.get()),
        phase: CTX_PHASE.with(|c| c.get()),
    };
    CTX_PHASE.with(|c| c.set(phase));
    g
}

pub fn current_layer() -> u32 {
    CTX_LAYER.with(|c| c.get())
}

pub fn current_phase() -> Phase {
    CTX_PHASE.with(|c| c.get())
}

// ---- allocations -------------------------------------------------------------------------

/// The accounting record of one storage; releases its bytes when dropped.
#[derive(Debug)]
pub struct Allocation {
    tracker: &'static Tracker,
    bytes: u64,
    category: AtomicU8,
    layer: AtomicU32,
    /// Holders currently keeping this storage for backward (see `save`).
    saves: AtomicU32,
    /// The category to return to when the last holder lets go.
    base_category: AtomicU8,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracker({})", self.name)
    }
}

impl Allocation {
    pub fn new(tracker: &'static Tracker, bytes: u64, category: Category) -> Self {
        let layer = current_layer();
        tracker.add(bytes, category as u8, layer, current_phase());
        Allocation {
            tracker,
            bytes,
            category: AtomicU8::new(category as u8),
            layer: AtomicU32::new(layer),
            saves: AtomicU32::new(0),
            base_category: AtomicU8::new(category as u8),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn category(&self) -> Category {
        Category::from_u8(self.category.load(Ordering::Relaxed))
    }

    pub fn layer(&self) -> String {
        layer_name(self.layer.load(Ordering::Relaxed))
    }

    /// One more holder keeps this storage for backward. The first moves its bytes to
    /// `SavedForBackward` (charged to the current layer); `unsave` undoes it.
    pub fn save(&self) {
        if self.saves.fetch_add(1, Ordering::AcqRel) == 0 {
            self.base_category
                .store(self.category.load(Ordering::Relaxed), Ordering::Relaxed);
            self.retag(Category::SavedForBackward);
        }
    }

    /// A holder no longer keeps this storage; the last one returns it to the category it
    /// had before it was first saved.
    pub fn unsave(&self) {
        if self.saves.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.retag(Category::from_u8(
                self.base_category.load(Ordering::Relaxed),
            ));
        }
    }

    /// Move this storage's bytes to another category, charged to the current layer.
    pub fn retag(&self, category: Category) {
        let new_layer = current_layer();
        let old_cat = self.category.swap(category as u8, Ordering::Relaxed);
        let old_layer = self.layer.swap(new_layer, Ordering::Relaxed);
        if old_cat != category as u8 || old_layer != new_layer {
            self.tracker
                .sub(self.bytes, old_cat, old_layer, current_phase());
            self.tracker
                .add(self.bytes, category as u8, new_layer, current_phase());
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.tracker.sub(
            self.bytes,
            self.category.load(Ordering::Relaxed),
            self.layer.load(Ordering::Relaxed),
            current_phase(),
        );
    }
}

/// A host vector whose bytes are counted by a tracker. It never changes length, so its
/// accounting stays exact.
#[derive(Debug)]
pub struct TrackedVec<T> {
    data: Vec<T>,
    alloc: Allocation,
}

impl<T> TrackedVec<T> {
    pub fn from_vec(data: Vec<T>, tracker: &'static Tracker, category: Category) -> Self {
        let bytes = (data.len() * std::mem::size_of::<T>()) as u64;
        TrackedVec {
            data,
            alloc: Allocation::new(tracker, bytes, category),
        }
    }
    pub fn alloc(&self) -> &Allocation {
        &self.alloc
    }
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<T: Clone> TrackedVec<T> {
    pub fn filled(value: T, len: usize, tracker: &'static Tracker, category: Category) -> Self {
        Self::from_vec(vec![value; len], tracker, category)
    }
}

impl<T> std::ops::Deref for TrackedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.data
    }
}

impl<T> std::ops::DerefMut for TrackedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
}
