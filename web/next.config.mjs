/**
 * The web app is a static export (web/out) that the API serves at `/` on its own origin
 * (api/app.py), so API calls are same-origin `/v2/...` requests: no CORS, one port.
 * Pages with an id read it from the query string (`/videos/view/?id=...`): a static export
 * has no server-side route parameters.
 */
/** @type {import('next').NextConfig} */
const nextConfig = {
  output: "export",
  trailingSlash: true,
  images: { unoptimized: true },
  reactStrictMode: true,
  // Build output only; lint and type checks run as `npm run lint` and `npm run typecheck`.
  eslint: { ignoreDuringBuilds: true },
};

export default nextConfig;
