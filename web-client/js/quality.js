// Small link-quality indicators from the server's `connection_quality` reports: a badge per
// pupil tile for the teacher, and one for the page's own connection. The word is on the badge
// (colour alone is not enough for everyone); the numbers are in the tooltip for whoever wants them.

import { t } from './i18n.js';

const LABEL = { good: 'live.quality.good', fair: 'live.quality.fair', poor: 'live.quality.poor' };
const ARIA = { good: 'live.quality.aria_good', fair: 'live.quality.aria_fair', poor: 'live.quality.aria_poor' };

/** A hidden badge; it appears with the first report. */
export function createQualityBadge() {
  const badge = document.createElement('span');
  badge.className = 'quality-badge';
  badge.hidden = true;
  return badge;
}

/** Shows one `connection_quality` entry on `badge`; null hides it. */
export function showQuality(badge, entry) {
  if (!entry || !LABEL[entry.quality]) {
    badge.hidden = true;
    return;
  }
  badge.dataset.quality = entry.quality;
  badge.textContent = t(LABEL[entry.quality]);
  const details = qualityDetails(entry);
  badge.title = details;
  badge.setAttribute('aria-label', t(ARIA[entry.quality], { details }));
  badge.hidden = false;
}

function qualityDetails(entry) {
  const parts = [];
  if (Number.isFinite(entry.rtt_ms)) parts.push(`RTT ${Math.round(entry.rtt_ms)} ms`);
  if (Number.isFinite(entry.loss)) parts.push(`loss ${(entry.loss * 100).toFixed(1)}%`);
  if (Number.isFinite(entry.estimate_kbps)) {
    parts.push(entry.estimate_kbps >= 1000
      ? `estimate ${(entry.estimate_kbps / 1000).toFixed(1)} Mbit/s`
      : `estimate ${Math.round(entry.estimate_kbps)} kbit/s`);
  }
  const layers = Object.values(entry.layers || {});
  if (layers.some((l) => l === null)) parts.push(t('live.quality.video_paused'));
  return parts.join(' · ') || t('live.quality.no_measurements');
}
