"use client";

import Link from "next/link";
import { usePathname, useRouter } from "next/navigation";
import { type ReactNode, useEffect, useState } from "react";
import { clearKey, getKey } from "@/api/session";

const NAV = [
  { href: "/replicas/", label: "Replicas" },
  { href: "/videos/", label: "Videos" },
  { href: "/templates/", label: "Templates & batches" },
  { href: "/personas/", label: "Personas" },
  { href: "/calls/", label: "Conversations" },
  { href: "/webhooks/", label: "Webhooks" },
];

/** The call page (`/call/`, which the server also serves at a conversation_url,
 * `/conversations/<id>`) stands alone: a link's token lets its person in, with no API key. */
function isCallPage(pathname: string): boolean {
  return pathname === "/call" || pathname.startsWith("/call/") || pathname.startsWith("/conversations/");
}

/** The page frame: navigation, and a redirect to sign-in when this tab holds no API key. */
export function Shell({ children }: { children: ReactNode }) {
  const pathname = usePathname() ?? "/";
  const router = useRouter();
  const [signedIn, setSignedIn] = useState<boolean | null>(null);
  const onSignIn = pathname.startsWith("/signin");
  const bare = isCallPage(pathname);

  useEffect(() => {
    if (bare) return;
    const has = getKey() !== null;
    setSignedIn(has);
    if (!has && !onSignIn) {
      const next = encodeURIComponent(pathname + window.location.search);
      router.replace(`/signin/?next=${next}`);
    }
  }, [pathname, onSignIn, router, bare]);

  if (bare) return <>{children}</>;

  function signOut() {
    clearKey();
    router.replace("/signin/");
  }

  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <Link href="/replicas/" className="brand">
          Doppel
        </Link>
        {signedIn && !onSignIn ? (
          <nav aria-label="Main">
            <ul>
              {NAV.map((item) => (
                <li key={item.href}>
                  <Link href={item.href} aria-current={pathname.startsWith(item.href) ? "page" : undefined}>
                    {item.label}
                  </Link>
                </li>
              ))}
              <li>
                <button type="button" className="link" onClick={signOut}>
                  Sign out
                </button>
              </li>
            </ul>
          </nav>
        ) : null}
      </header>
      <main id="main" tabIndex={-1}>
        {signedIn || onSignIn ? children : <p className="muted">Loading…</p>}
      </main>
    </>
  );
}
