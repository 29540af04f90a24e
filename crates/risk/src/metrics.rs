//! Ranking quality of scores against binary labels.

/// Runs of equal scores in `pairs` (sorted by score): (how many, how many positive).
fn ties(pairs: &[(f64, bool)]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut last: Option<f64> = None;
    for (score, label) in pairs {
        if last != Some(*score) {
            out.push((0, 0));
            last = Some(*score);
        }
        if let Some(run) = out.last_mut() {
            run.0 += 1;
            run.1 += usize::from(*label);
        }
    }
    out
}

fn sorted(scores: &[f64], labels: &[bool], descending: bool) -> Vec<(f64, bool)> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| if descending { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) });
    pairs
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half. None without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pairs = sorted(scores, labels, false);
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // The positives' ranks (1-based; a tie shares its average rank), Mann-Whitney U.
    let (mut before, mut rank_sum) = (0usize, 0.0);
    for (n, hits) in ties(&pairs) {
        let average_rank = before as f64 + (n as f64 + 1.0) / 2.0;
        rank_sum += average_rank * hits as f64;
        before += n;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Area under the precision-recall curve as average precision: the mean, over positives, of
/// the precision where each is reached (best score first; a tie is reached all at once).
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pairs = sorted(scores, labels, true);
    let positives = pairs.iter().filter(|p| p.1).count();
    if positives == 0 {
        return None;
    }
    let (mut seen, mut found, mut sum) = (0usize, 0usize, 0.0);
    for (n, hits) in ties(&pairs) {
        seen += n;
        found += hits;
        sum += hits as f64 * found as f64 / seen as f64;
    }
    Some(sum / positives as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_areas() {
        // Perfect and reversed rankings.
        assert_eq!(roc_auc(&[0.1, 0.2, 0.9], &[false, false, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.2, 0.1], &[false, false, true]), Some(0.0));
        // Positives at 0.8 and 0.4, negatives at 0.7, 0.5, 0.1: the pairs won are
        // (0.8 > all three) + (0.4 > 0.1) = 4 of 6.
        let s = [0.8, 0.7, 0.5, 0.4, 0.1];
        let l = [true, false, false, true, false];
        assert!((roc_auc(&s, &l).unwrap() - 4.0 / 6.0).abs() < 1e-12);
        // Average precision: hits at ranks 1 and 4: (1/1 + 2/4) / 2.
        assert!((pr_auc(&s, &l).unwrap() - 0.75).abs() < 1e-12);
        // All tied: a coin toss for ROC, the base rate for PR.
        assert_eq!(roc_auc(&[0.5; 4], &[true, false, false, true]), Some(0.5));
        assert_eq!(pr_auc(&[0.5; 4], &[true, false, false, false]), Some(0.25));
        assert_eq!(roc_auc(&[0.5, 0.6], &[true, true]), None);
        assert_eq!(pr_auc(&[0.5], &[false]), None);
    }
}
