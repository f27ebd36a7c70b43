/**
 * Kubernetes objects checked offline against Kubernetes' own API schemas,
 * as `kubectl apply --validate=strict` would check them but without an API
 * server. The schemas are the `kubernetes-models` package's, generated from
 * Kubernetes' OpenAPI definitions:
 *
 * - its ajv validators check types, required fields and formats, but let
 *   unknown fields through (the OpenAPI definitions do not close objects);
 * - its TypeScript declarations describe the same definitions with every
 *   object closed, so each object is also walked against the declared type
 *   of its kind, and every field that type does not declare, at any depth,
 *   is refused (a misspelled `replica:` is an error, not a silent no-op).
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import ts from 'typescript';
import { repoRoot } from './harness.js';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
}

/** kubernetes-models' module for an apiVersion and kind: `v1/ConfigMap`, `apps/v1/Deployment`. */
function modelModule(o: K8sObject): string {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : [undefined, o.apiVersion];
  return `kubernetes-models/${group ? `${group}/` : ''}${version}/${o.kind}`;
}

const label = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`;

/** The ajv validators: wrong types, missing required fields, bad formats. */
function modelProblems(objects: K8sObject[]): string[] {
  const require = createRequire(join(repoRoot, 'package.json'));
  const problems: string[] = [];
  for (const o of objects) {
    let Model: (new (data: unknown) => { validate(): void }) | undefined;
    try {
      Model = (require(modelModule(o)) as Record<string, typeof Model>)[o.kind];
    } catch {
      Model = undefined;
    }
    if (!Model) {
      problems.push(`${label(o)}: no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(o).validate();
    } catch (err) {
      problems.push(`${label(o)}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/**
 * Every field the TypeScript declaration of its kind does not have, walked
 * value by value (so every unknown field is named, not only the first per
 * object, which is all a type-check of the literal would report).
 */
function unknownFields(objects: K8sObject[]): string[] {
  const file = join(repoRoot, 'test', '__k8s-objects__.ts');
  const text = objects
    .map((o, i) => `import type { I${o.kind} as T${i} } from '${modelModule(o)}';\ndeclare const o${i}: T${i};`)
    .join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    target: ts.ScriptTarget.ES2022,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, text, language, true) : getSourceFile(name, language, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  const checker = program.getTypeChecker();
  const declared = new Map<string, ts.Type>();
  program.getSourceFile(file)!.forEachChild((node) => {
    if (!ts.isVariableStatement(node)) return;
    const decl = node.declarationList.declarations[0]!;
    declared.set(decl.name.getText(), checker.getTypeAtLocation(decl.name));
  });

  const problems: string[] = [];
  const walk = (value: unknown, declaredType: ts.Type, path: string, where: string): void => {
    if (value === null || typeof value !== 'object') return;
    let type = checker.getNonNullableType(declaredType);
    if (type.isUnion()) {
      // IntOrString, Quantity: an object value there is a type error the validators report.
      const objects = type.types.filter((t) => t.flags & ts.TypeFlags.Object);
      if (objects.length !== 1) return;
      type = objects[0]!;
    }
    if (!(type.flags & ts.TypeFlags.Object)) return; // any/unknown (free-form) or a primitive
    if (Array.isArray(value)) {
      if (!checker.isArrayType(type)) return;
      const element = checker.getTypeArguments(type as ts.TypeReference)[0]!;
      value.forEach((v, i) => walk(v, element, `${path}[${i}]`, where));
      return;
    }
    const index = checker.getIndexInfosOfType(type)[0];
    for (const [key, v] of Object.entries(value)) {
      const at = path ? `${path}.${key}` : key;
      const property = checker.getPropertyOfType(type, key);
      if (property) walk(v, checker.getTypeOfSymbol(property), at, where);
      else if (index) walk(v, index.type, at, where);
      else problems.push(`${where}: unknown field ${at} (not in ${checker.typeToString(type)})`);
    }
  };
  objects.forEach((o, i) => {
    const type = declared.get(`o${i}`)!;
    // An unresolved declaration is `any`, which would let every field through.
    if (type.flags & ts.TypeFlags.Object) walk(o, type, '', label(o));
    else problems.push(`${label(o)}: no TypeScript declaration I${o.kind} in ${modelModule(o)}`);
  });
  return problems;
}

/** Every problem Kubernetes' schemas find in these objects, unknown fields included; [] when all are valid. */
export function k8sSchemaProblems(objects: K8sObject[]): string[] {
  const unknownKinds = modelProblems(objects);
  // An object with no schema would only add unresolved-import noise below.
  const known = objects.filter((o) => !unknownKinds.some((p) => p.startsWith(`${label(o)}: no schema`)));
  return [...unknownKinds, ...unknownFields(known)];
}
