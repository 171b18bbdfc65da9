/**
 * API shapes: every one is a component of the generated schema.d.ts (`npm run gen:api` from the
 * server's OpenAPI document); nothing here restates a field by hand.
 */
import type { components } from "./schema";

type Schemas = components["schemas"];

export type Replica = Schemas["ReplicaOut"];
export type ReplicaList = Schemas["ReplicaList"];
export type Video = Schemas["VideoOut"];
export type VideoList = Schemas["VideoList"];
export type Delivery = Schemas["DeliveryOut"];
export type WebhookSecret = Schemas["WebhookSecret"];
export type Template = Schemas["TemplateOut"];
export type TemplateList = Schemas["TemplateList"];
export type Batch = Schemas["BatchOut"];
export type BatchRow = Schemas["RowOut"];
export type ConsentStatement = Schemas["ConsentStatement"];
export type ScriptOut = Schemas["ScriptOut"];
export type Persona = Schemas["PersonaOut"];
export type PersonaList = Schemas["PersonaList"];
export type Conversation = Schemas["ConversationOut"];
export type ConversationList = Schemas["ConversationList"];
export type ConversationCreated = Schemas["ConversationCreated"];
