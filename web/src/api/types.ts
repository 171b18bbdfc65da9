/**
 * API shapes. Everything that the server's OpenAPI document describes comes from the generated
 * schema.d.ts (`npm run gen:api`). The `Pending*` shapes are for routes other engineers are
 * adding right now (templates, batches, consent statement); each is replaced by the generated
 * type once those routes are in the schema: `Generated<"Name", Pending>` picks the generated
 * component when it exists, so regenerating schema.d.ts switches over without code changes.
 */
import type { components } from "./schema";

type Schemas = components["schemas"];
type Generated<Name extends string, Fallback> = Name extends keyof Schemas
  ? Schemas[Name]
  : Fallback;

export type Replica = Schemas["ReplicaOut"] & { thumbnail_url?: string | null };
export type ReplicaList = Schemas["ReplicaList"];
export type Video = Schemas["VideoOut"] & { hosted_url?: string | null };
export type VideoList = Schemas["VideoList"];
export type Delivery = Schemas["DeliveryOut"];
export type WebhookSecret = Schemas["WebhookSecret"];

type PendingTemplate = {
  template_id: string;
  name: string;
  replica_id: string;
  script: string;
  variables: string[];
  created_at?: string;
};
type PendingTemplateList = { data: PendingTemplate[]; total_count: number; page: number; limit: number };
type PendingBatchRow = {
  /** 1-based: the row's number in the CSV (after the header) or the JSON list. */
  row_index: number;
  row_key: string;
  variables: Record<string, string>;
  status: string;
  video_id: string | null;
  error_message: string | null;
  download_url: string | null;
};
type PendingBatch = {
  batch_id: string;
  template_id: string;
  batch_name?: string | null;
  /** `running` while a row may still change, then `completed`. */
  status: string;
  /** Rows per status: pending, queued, generating, ready, error, deleted. */
  counts: Record<string, number>;
  row_count?: number;
  rows?: PendingBatchRow[] | null;
};

export type Template = Generated<"TemplateOut", PendingTemplate>;
export type TemplateList = Generated<"TemplateList", PendingTemplateList>;
export type Batch = Generated<"BatchOut", PendingBatch>;
export type BatchRow = NonNullable<Batch["rows"]>[number];
