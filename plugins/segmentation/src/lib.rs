//! `segmentation`: k-means over customers' numeric features, as the workflow step `segment`.
//!
//! 1. Reads every customer's features with `records.scan` (ids and numbers only, 5,000 a call),
//!    keeping them as `f32` in one flat array (a million customers × 5 features is 20 MB);
//!    customers missing a feature are skipped and counted.
//! 2. Normalises each feature to z-scores, so that no feature weighs more for its units.
//! 3. Seeds k centroids with k-means++ (a fixed seed: the same data gives the same segments)
//!    and runs Lloyd iterations until at most `tolerance` (0.1%) of the customers change segment
//!    (or `max_iterations`).
//! 4. Numbers the segments from the highest-valued centroid (the largest sum of z-scores, those
//!    of `lower_is_better` features counted negatively) down, so that segment 1 is the best
//!    customers' from one run to the next.
//! 5. Reads the customers again, with their current segment, and writes the new one where it
//!    changed (`segment_field`; none to report only).
//!
//! The output reports each segment's size and centroid in the features' own units.

use rapport_sdk::records::{self, Scanned};
use rapport_sdk::{Plugin, Value, json};
use serde_json::Map;

pub struct Segmentation;

/// Records per `scan` call.
const PAGE: u32 = 5_000;

/// What to cluster: the step's input over the configuration's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub entity: String,
    pub features: Vec<String>,
    pub k: usize,
    pub filter: String,
    pub segment_field: Option<String>,
    pub max_iterations: usize,
    /// Iterations stop once at most this share of customers changed segment.
    pub tolerance: f64,
    /// Features where a higher value is worse (a churn risk): they count against a segment's
    /// value when segments are numbered.
    pub lower_is_better: Vec<String>,
}

impl Job {
    pub fn from(input: &Value, config: &Map<String, Value>) -> Result<Self, String> {
        let get = |key: &str| input.get(key).or_else(|| config.get(key));
        let entity = get("entity")
            .and_then(Value::as_str)
            .unwrap_or("account")
            .to_owned();
        let features: Vec<String> = get("features")
            .and_then(Value::as_array)
            .map(|features| {
                features
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if features.is_empty() {
            return Err("no `features` to cluster on: name numeric fields".to_owned());
        }
        let k = get("k").and_then(Value::as_u64).unwrap_or(4) as usize;
        if !(2..=20).contains(&k) {
            return Err(format!("`k` must be 2 to 20, not {k}"));
        }
        let segment_field = match input.get("segment_field") {
            Some(Value::Null) => None,
            Some(Value::String(field)) => Some(field.clone()),
            _ => config
                .get("segment_field")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        Ok(Self {
            entity,
            features,
            k,
            filter: input
                .get("filter")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            segment_field,
            max_iterations: get("max_iterations")
                .and_then(Value::as_u64)
                .unwrap_or(100)
                .clamp(1, 500) as usize,
            tolerance: get("tolerance")
                .and_then(Value::as_f64)
                .unwrap_or(0.001)
                .clamp(0.0, 0.5),
            lower_is_better: get("lower_is_better")
                .and_then(Value::as_array)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|name| name.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Points, `dims` values each, in chunks of [`CHUNK`] points: a million points grow without
/// ever copying the whole set into a twice-as-large array (which the 64 MiB a plugin may use
/// would not hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    pub dims: usize,
    chunks: Vec<Vec<f32>>,
    len: usize,
}

/// Points per chunk.
pub const CHUNK: usize = 65_536;

impl Points {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            chunks: Vec::new(),
            len: 0,
        }
    }

    pub fn from_flat(dims: usize, values: &[f32]) -> Self {
        let mut points = Self::new(dims);
        for point in values.chunks_exact(dims) {
            points.push(point.iter().copied());
        }
        points
    }

    pub fn push(&mut self, point: impl IntoIterator<Item = f32>) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK * self.dims));
        }
        let chunk = self.chunks.last_mut().expect("a chunk");
        chunk.extend(point.into_iter().take(self.dims));
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn point(&self, index: usize) -> &[f32] {
        let offset = (index % CHUNK) * self.dims;
        &self.chunks[index / CHUNK][offset..offset + self.dims]
    }

    fn all(&self) -> impl Iterator<Item = &[f32]> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.chunks_exact(self.dims))
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        let dims = self.dims;
        self.chunks
            .iter_mut()
            .flat_map(move |chunk| chunk.chunks_exact_mut(dims))
    }

    /// Every value, point after point (for tests).
    pub fn flat(&self) -> Vec<f32> {
        self.all().flatten().copied().collect()
    }
}

/// The mean and standard deviation of each feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Scale {
    /// Fits the points and rewrites them as z-scores.
    pub fn normalise(points: &mut Points) -> Self {
        let (n, dims) = (points.len().max(1) as f64, points.dims);
        let mut mean = vec![0.0; dims];
        for chunk in points.all() {
            for (sum, value) in mean.iter_mut().zip(chunk) {
                *sum += f64::from(*value);
            }
        }
        mean.iter_mut().for_each(|sum| *sum /= n);
        let mut std = vec![0.0; dims];
        for chunk in points.all() {
            for ((sum, value), mean) in std.iter_mut().zip(chunk).zip(&mean) {
                *sum += (f64::from(*value) - mean).powi(2);
            }
        }
        std.iter_mut().for_each(|sum| {
            *sum = (*sum / n).sqrt();
            if *sum == 0.0 {
                *sum = 1.0;
            }
        });
        for chunk in points.all_mut() {
            for ((value, mean), std) in chunk.iter_mut().zip(&mean).zip(&std) {
                *value = ((f64::from(*value) - mean) / std) as f32;
            }
        }
        Self { mean, std }
    }

    pub fn apply(&self, raw: &[f64]) -> Vec<f32> {
        raw.iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((value, mean), std)| ((value - mean) / std) as f32)
            .collect()
    }

    pub fn unapply(&self, z: &[f32]) -> Vec<f64> {
        z.iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((value, mean), std)| f64::from(*value) * std + mean)
            .collect()
    }
}

/// The result of clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// k centroids, `dims` values each, in segment order (segment 1 first).
    pub centroids: Vec<Vec<f32>>,
    pub sizes: Vec<usize>,
    pub iterations: usize,
    pub converged: bool,
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The index of the centroid nearest to `point`.
pub fn nearest(centroids: &[Vec<f32>], point: &[f32]) -> usize {
    let mut best = (0, f32::INFINITY);
    for (index, centroid) in centroids.iter().enumerate() {
        let d = distance(centroid, point);
        if d < best.1 {
            best = (index, d);
        }
    }
    best.0
}

/// A small deterministic generator (xorshift64*): the same data, the same segments.
struct Random(u64);

impl Random {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// k-means with k-means++ seeding over normalised points; iterations stop when at most
/// `tolerance` of the points changed cluster (0: none), or after `max_iterations`. Clusters are
/// numbered by the value of their centroid, the sum of its coordinates times `signs` (-1 for a
/// feature where higher is worse), highest first.
pub fn kmeans(
    points: &Points,
    k: usize,
    max_iterations: usize,
    tolerance: f64,
    signs: &[f32],
) -> Clusters {
    let n = points.len();
    let dims = points.dims;
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    // k-means++: each next centroid drawn with probability proportional to the squared
    // distance to the nearest one chosen so far.
    let mut centroids: Vec<Vec<f32>> = vec![
        points
            .point((random.next_f64() * n as f64) as usize % n)
            .to_vec(),
    ];
    let mut nearest_distance: Vec<f32> = (0..n)
        .map(|i| distance(points.point(i), &centroids[0]))
        .collect();
    while centroids.len() < k {
        let total: f64 = nearest_distance.iter().map(|d| f64::from(*d)).sum();
        let next = if total <= 0.0 {
            (random.next_f64() * n as f64) as usize % n
        } else {
            let mut target = random.next_f64() * total;
            let mut chosen = n - 1;
            for (index, d) in nearest_distance.iter().enumerate() {
                target -= f64::from(*d);
                if target <= 0.0 {
                    chosen = index;
                    break;
                }
            }
            chosen
        };
        let centroid = points.point(next).to_vec();
        for (index, d) in nearest_distance.iter_mut().enumerate() {
            *d = d.min(distance(points.point(index), &centroid));
        }
        centroids.push(centroid);
    }
    // Lloyd iterations.
    let mut assignment = vec![u8::MAX; n];
    let mut sizes = vec![0usize; k];
    let mut iterations = 0;
    let mut converged = false;
    while iterations < max_iterations {
        iterations += 1;
        let mut changed = 0usize;
        let mut sums = vec![0f64; k * dims];
        sizes.iter_mut().for_each(|size| *size = 0);
        for (index, assigned) in assignment.iter_mut().enumerate() {
            let point = points.point(index);
            let best = nearest(&centroids, point);
            if usize::from(*assigned) != best {
                *assigned = best as u8;
                changed += 1;
            }
            sizes[best] += 1;
            for (sum, value) in sums[best * dims..(best + 1) * dims].iter_mut().zip(point) {
                *sum += f64::from(*value);
            }
        }
        for (cluster, centroid) in centroids.iter_mut().enumerate() {
            if sizes[cluster] == 0 {
                continue; // An empty cluster keeps its centroid.
            }
            for (dim, value) in centroid.iter_mut().enumerate() {
                *value = (sums[cluster * dims + dim] / sizes[cluster] as f64) as f32;
            }
        }
        if changed as f64 <= tolerance * n as f64 {
            converged = true;
            break;
        }
    }
    // Segment 1 is the highest-valued centroid.
    let mut order: Vec<usize> = (0..k).collect();
    let value = |centroid: &Vec<f32>| {
        centroid
            .iter()
            .zip(signs.iter().chain(std::iter::repeat(&1.0)))
            .map(|(v, sign)| f64::from(v * sign))
            .sum::<f64>()
    };
    order.sort_by(|a, b| value(&centroids[*b]).total_cmp(&value(&centroids[*a])));
    Clusters {
        centroids: order.iter().map(|i| centroids[*i].clone()).collect(),
        sizes: order.iter().map(|i| sizes[*i]).collect(),
        iterations,
        converged,
    }
}

/// The values of a scanned record, if it has every one.
fn complete(scanned: &Scanned, count: usize) -> Option<Vec<f64>> {
    scanned.values.iter().take(count).copied().collect()
}

fn host<T>(what: &str, result: Result<T, rapport_sdk::HostError>) -> Result<T, String> {
    result.map_err(|error| format!("cannot {what}: {error:?}"))
}

/// Runs a job against the host.
pub fn run(job: &Job) -> Result<Value, String> {
    let names: Vec<&str> = job.features.iter().map(String::as_str).collect();
    let dims = names.len();
    let mut points = Points::new(dims);
    let mut skipped = 0usize;
    host(
        &format!("read the `{}` records", job.entity),
        records::scan_each(
            &job.entity,
            &job.filter,
            &names,
            PAGE,
            |scanned| match complete(&scanned, dims) {
                Some(values) => points.push(values.iter().map(|v| *v as f32)),
                None => skipped += 1,
            },
        ),
    )?;
    if points.len() < job.k {
        return Err(format!(
            "{} `{}` records have every feature ({}): fewer than the {} segments asked for",
            points.len(),
            job.entity,
            job.features.join(", "),
            job.k
        ));
    }
    let scale = Scale::normalise(&mut points);
    let signs: Vec<f32> = job
        .features
        .iter()
        .map(|name| {
            if job.lower_is_better.contains(name) {
                -1.0
            } else {
                1.0
            }
        })
        .collect();
    let clusters = kmeans(&points, job.k, job.max_iterations, job.tolerance, &signs);
    let customers = points.len();
    drop(points);

    let mut written = 0usize;
    if let Some(field) = &job.segment_field {
        let mut with_segment = names.clone();
        with_segment.push(field);
        let mut changes: Vec<(String, usize)> = Vec::new();
        host(
            &format!("read the `{}` records again", job.entity),
            records::scan_each(&job.entity, &job.filter, &with_segment, PAGE, |scanned| {
                if let Some(values) = complete(&scanned, dims) {
                    let segment = nearest(&clusters.centroids, &scale.apply(&values)) + 1;
                    let current = scanned.values.get(dims).copied().flatten();
                    if current != Some(segment as f64) {
                        changes.push((scanned.id, segment));
                    }
                }
            }),
        )?;
        for (id, segment) in changes {
            host(
                &format!("write the segment of `{}` {id}", job.entity),
                records::update(&job.entity, &id, &json!({ field: segment })),
            )?;
            written += 1;
        }
    }
    let segments: Vec<Value> = clusters
        .centroids
        .iter()
        .zip(&clusters.sizes)
        .enumerate()
        .map(|(index, (centroid, size))| {
            let centre: Map<String, Value> = job
                .features
                .iter()
                .zip(scale.unapply(centroid))
                .map(|(name, value)| (name.clone(), json!((value * 1000.0).round() / 1000.0)))
                .collect();
            json!({"segment": index + 1, "size": size, "centroid": centre})
        })
        .collect();
    Ok(json!({
        "entity": job.entity,
        "k": job.k,
        "features": job.features,
        "customers": customers,
        "skipped": skipped,
        "iterations": clusters.iterations,
        "converged": clusters.converged,
        "segments": segments,
        "written": written,
    }))
}

impl Plugin for Segmentation {
    fn run_step(step: &str, input: Value) -> Result<Value, String> {
        if step != "segment" {
            return Err(format!("no step `{step}`: use segment"));
        }
        run(&Job::from(&input, &rapport_sdk::config())?)
    }
}

rapport_sdk::plugin!(Segmentation);

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Points {
        // Three well separated groups of 4, 3 and 5 points in two dimensions.
        let values: Vec<f32> = [
            (0.0, 0.0),
            (0.2, 0.1),
            (0.1, 0.3),
            (0.3, 0.2),
            (10.0, 10.0),
            (10.2, 9.9),
            (9.8, 10.1),
            (0.0, 10.0),
            (0.1, 9.8),
            (0.2, 10.2),
            (-0.1, 10.1),
            (0.0, 9.9),
        ]
        .iter()
        .flat_map(|(x, y)| [*x, *y])
        .collect();
        Points::from_flat(2, &values)
    }

    #[test]
    fn kmeans_finds_separated_groups_and_numbers_the_best_first() {
        let mut points = blobs();
        let scale = Scale::normalise(&mut points);
        let clusters = kmeans(&points, 3, 100, 0.0, &[1.0, 1.0]);
        assert!(clusters.converged);
        assert_eq!(clusters.sizes, vec![3, 5, 4]);
        let first = scale.unapply(&clusters.centroids[0]);
        assert!(
            (first[0] - 10.0).abs() < 0.2 && (first[1] - 10.0).abs() < 0.2,
            "{first:?}"
        );
        // The same data gives the same segments.
        let mut again = blobs();
        Scale::normalise(&mut again);
        assert_eq!(kmeans(&again, 3, 100, 0.0, &[1.0, 1.0]), clusters);
        // With the second feature counted against value, the group high on it and low on the
        // first, (0, 10), comes last instead of second.
        let worse = kmeans(&again, 3, 100, 0.0, &[1.0, -1.0]);
        assert_eq!(worse.sizes, vec![3, 4, 5], "{worse:?}");
    }

    #[test]
    fn points_span_chunks() {
        let mut points = Points::new(2);
        for i in 0..(CHUNK + 3) {
            points.push([i as f32, 1.0]);
        }
        assert_eq!(points.len(), CHUNK + 3);
        assert_eq!(points.point(CHUNK + 1), &[(CHUNK + 1) as f32, 1.0]);
        assert_eq!(points.all().count(), CHUNK + 3);
    }

    #[test]
    fn normalising_gives_every_feature_the_same_weight() {
        let mut points = Points::from_flat(2, &[1.0, 1000.0, 3.0, 3000.0]);
        let scale = Scale::normalise(&mut points);
        assert_eq!(points.flat(), vec![-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(scale.unapply(&[0.0, 0.0]), vec![2.0, 2000.0]);
        // A constant feature does not divide by zero.
        let mut flat = Points::from_flat(1, &[5.0, 5.0]);
        Scale::normalise(&mut flat);
        assert_eq!(flat.flat(), vec![0.0, 0.0]);
    }

    #[test]
    fn jobs_take_the_input_over_the_configuration() {
        let config = json!({"entity": "account", "features": ["a", "b"], "k": 4, "segment_field": "segment"});
        let job = Job::from(
            &json!({"k": 3, "segment_field": null}),
            config.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(
            (job.k, job.segment_field.clone(), job.features.len()),
            (3, None, 2)
        );
        assert!(
            Job::from(&json!({"k": 1}), config.as_object().unwrap())
                .unwrap_err()
                .contains("2 to 20")
        );
        assert!(
            Job::from(&json!({}), &Map::new())
                .unwrap_err()
                .contains("features")
        );
    }
}
